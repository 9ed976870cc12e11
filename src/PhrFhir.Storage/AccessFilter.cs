using System.Text.RegularExpressions;

namespace PhrFhir.Storage;

/// <summary>
/// What one request may see, as a SQL condition on a stored document row aliased <c>d</c> (its columns
/// and the index tables by <c>rkey = d.id</c>). Arguments are written <c>@0</c>, <c>@1</c>… and numbered
/// when the condition is placed into a statement, so the same filter confines a search, its
/// _include/_revinclude, a history and a single read alike — one rule, applied in SQL, so paging and
/// totals count only what may be seen. Built by the server's access rules (Security/AccessPolicy).
/// </summary>
public sealed partial class AccessFilter(string sql, IReadOnlyList<object> args)
{
    public string Sql { get; } = sql;
    public IReadOnlyList<object> Args { get; } = args;

    /// <summary>Nothing at all is visible.</summary>
    public static readonly AccessFilter None = new("false", []);

    [GeneratedRegex(@"@(\d+)")]
    private static partial Regex Placeholder();

    /// <summary>The condition with its arguments numbered from <c>$firstArg</c>.</summary>
    public string Render(int firstArg) =>
        Placeholder().Replace(Sql, m => "$" + (firstArg + int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)));
}

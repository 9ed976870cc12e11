using System.Text.RegularExpressions;

namespace PhrFhir.Storage;

/// <summary>
/// What one request may see, as a SQL condition on a stored document row aliased <c>d</c> (its columns
/// and the index tables by <c>rkey = d.id</c>). Arguments are written <c>@0</c>, <c>@1</c>… and numbered
/// when the condition is placed into a statement, so the same filter confines a search, its
/// _include/_revinclude, a history and a single read alike — one rule, applied in SQL, so paging and
/// totals count only what may be seen. Built by the server's access rules (Security/AccessPolicy).
/// </summary>
public sealed partial class AccessFilter(string sql, IReadOnlyList<object> args, string? indexSql = null)
{
    public string Sql { get; } = sql;
    public IReadOnlyList<object> Args { get; } = args;

    /// <summary>
    /// The same condition on an index row's own columns (<c>writer</c>, <c>person</c>), when it can be
    /// so written: a search then applies it on the index tables and never joins the documents to count.
    /// </summary>
    public string? IndexSql { get; } = indexSql;

    /// <summary>Nothing at all is visible.</summary>
    public static readonly AccessFilter None = new("false", []);

    /// <summary>
    /// Everything, whoever asks: for checks that must span everyone's data and reveal none of it (a
    /// document uniqueId is unique across all documents), placed where a request's filter would go.
    /// </summary>
    public static readonly AccessFilter Everything = new("true", []);

    [GeneratedRegex(@"@(\d+)")]
    private static partial Regex Placeholder();

    /// <summary>The condition with its arguments numbered from <c>$firstArg</c>.</summary>
    public string Render(int firstArg) => Number(Sql, firstArg);

    /// <summary>The index-row form with its arguments numbered from <c>$firstArg</c> (the same numbers as <see cref="Render"/>).</summary>
    public string RenderIndex(int firstArg) => Number(IndexSql!, firstArg);

    static string Number(string sql, int firstArg) =>
        Placeholder().Replace(sql, m => "$" + (firstArg + int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)));
}

using System.Globalization;
using System.Text;
using Hl7.Fhir.Model;

namespace PhrFhir.Storage.Search;

/// <summary>
/// R4 search.html#total. Default (no <c>_total</c>): exact up to <see cref="SearchQuery.CountedTotalLimit"/> matches, else left out.
/// Estimate is answered exactly: an estimate from the planner's statistics would reflect rows the requester may not see.
/// </summary>
public enum TotalMode { Default, None, Estimate, Accurate }

public sealed record IncludeSpec(string SourceType, string ParamCode, string? TargetType, bool Iterate);

public sealed record SortKey(string Code, bool Descending);

/// <summary>A set of resource keys a criterion matches; <paramref name="Visible"/> when it holds only keys the requester may see.</summary>
public sealed record KeySet(string Sql, bool Visible)
{
    /// <summary>
    /// True when the keys are those of the token rows the set reads (<c>select rkey from fhir.ix_token where …</c>), so
    /// that <c>and person = …</c> appended to <see cref="Sql"/> confines it to resources of those persons (every index row
    /// of a resource carries the resource's person; a merge moves them all, WriteTransaction.MoveCompartmentAsync), and
    /// an index answers that (ix_token_search_person, Schema/021).
    /// </summary>
    public bool PersonKeyed { get; init; }

    /// <summary>
    /// The persons of this set's rows (<c>select person from …</c>), when the set names Patients by reference: a few
    /// persons whose rows the other criteria can then be read for, instead of probing each key (FhirStore.SearchAsync).
    /// </summary>
    public string? PersonsSql { get; init; }

    /// <summary>
    /// Set when the keys are those of one string value's prefix range (<c>family=東海林</c>): the index
    /// ix_string_search_ordered (Schema/024) gives its rows in (norm, rkey) order, so a search on this set alone
    /// pages in that order and reads only the page's rows instead of sorting every match by key (FhirStore.SearchAsync).
    /// </summary>
    public StringPrefix? Prefix { get; init; }
}

/// <summary>
/// A string criterion's prefix range on fhir.ix_string, as the ordered page needs it: one range per `param` whose rows the
/// parameter reads (`name`: its own, `family`'s and `given`'s — SearchParam.PartsIn), each selected by one of
/// <see cref="Wheres"/> (with the access filter's index-row form, when there is one), each in the index's order;
/// <see cref="Keys"/> and <see cref="Low"/> are the argument numbers of those `param` values (an array) and of the range's
/// lower bound (a probe for an earlier matching row of the same resource repeats them).
/// </summary>
public sealed record StringPrefix(IReadOnlyList<string> Wheres, int Keys, int Low);

/// <summary>
/// A FHIR search (R4 search.html) turned into parameterised SQL over the index tables: each criterion
/// is a set of resource keys (`select rkey …`), so chains and _has nest the same sets one level deep.
/// Unknown or unsupported parameters are errors unless the client asked for lenient handling.
///
/// The requester's <see cref="AccessFilter"/> is given before any SQL is built, and every set of rows
/// the search looks at is confined by it: the searched rows, the targets a chain follows, the
/// referrers a _has counts, what _include/_revinclude add, the total. So no criterion can tell a
/// hidden row from an absent one (docs/consent.md, "Searches").
/// </summary>
public sealed class SearchQuery
{
    public const int DefaultCount = 20;
    public const int MaxCount = 1000;
    /// <summary>
    /// Without <c>_total</c>, matches are counted up to this many, in the page's own statement; beyond it
    /// Bundle.total is left out and the next link tells there are more (docs/storage.md, "Totals").
    /// </summary>
    public const int CountedTotalLimit = 1000;

    /// <summary>
    /// The total a page shows without counting, or null: a page that was read (<c>_count</c> above 0) and has no row
    /// after it ends the matches — unless it is empty past the first page (an <c>_offset</c> beyond the end says nothing
    /// of how many there are).
    /// </summary>
    public static int? TotalShownByPage(int offset, int count, int pageRows, bool hasMore) =>
        count > 0 && !hasMore && (offset == 0 || pageRows > 0) ? offset + pageRows : null;

    /// <summary>
    /// How many matches a search counts at most for its total (null: all of them): with <c>_total=none</c> only what
    /// the page reads (<c>_offset</c> + <c>_count</c> + 1), by default <see cref="CountedTotalLimit"/> + 1 (or the page,
    /// if it reaches further), with <c>accurate</c>/<c>estimate</c> everything. A long: <c>_offset</c> may be as large as
    /// an int goes, and the sum must not wrap into a negative LIMIT.
    /// </summary>
    public static long? CountingBound(TotalMode total, int offset, int count) => total switch
    {
        TotalMode.None => (long)offset + count + 1,
        TotalMode.Default => Math.Max(CountedTotalLimit, (long)offset + count) + 1,
        _ => null,
    };

    // Result parameters: interpreted here or by the server, never criteria.
    static readonly HashSet<string> ResultParameters =
        ["_count", "_offset", "_sort", "_include", "_revinclude", "_total", "_summary", "_elements", "_format",
         "_pretty", "_contained", "_containedType"];

    readonly SearchParameters _registry;
    readonly List<object> _args = [];
    readonly List<string> _where = [];

    public string ResourceType { get; }
    public int Count { get; private set; } = DefaultCount;
    public int Offset { get; private set; }
    public TotalMode Total { get; private set; }
    public List<SortKey> Sort { get; } = [];
    public List<IncludeSpec> Includes { get; } = [];
    public List<IncludeSpec> RevIncludes { get; } = [];
    /// <summary>The parameters that were applied, for the Bundle's self link.</summary>
    public List<KeyValuePair<string, string>> Applied { get; } = [];
    public IReadOnlyList<object> Arguments => _args;
    public string WhereSql => (_where.Count == 0 ? "" : " and " + string.Join(" and ", _where)) + (FilterSql is null ? "" : " and " + FilterSql);

    /// <summary>What the requester may see (Security/AccessPolicy), or null when it sees everything.</summary>
    public AccessFilter? Filter { get; }

    /// <summary>
    /// True when a criterion looks at rows of other resources (a chain's targets, a _has's referrers): then
    /// the rows of the searched type alone do not decide the matches (WriteTransaction.SearchAsync).
    /// </summary>
    public bool ReadsOtherResources { get; private set; }

    /// <summary>The access filter on the searched row <c>d</c> (arguments numbered for this query's statements), or null.</summary>
    public string? FilterSql { get; }

    // The same filter on an index row's own person/writer columns, when it has that form (AccessFilter.IndexSql).
    readonly string? _rowFilter;

    /// <summary>
    /// The criteria that are plain sets of matching keys ("select rkey from ix_… where …"), and whether
    /// every criterion is one. When so, the store intersects the sets on the index tables alone and reads
    /// only the page's documents, instead of joining every match to the documents first.
    /// </summary>
    public List<KeySet> KeySets { get; } = [];
    public bool OnlyKeySets => KeySets.Count > 0 && KeySets.Count == _where.Count;

    /// <summary>True when the intersection of the key sets holds only visible keys (one of them is confined by the filter's index-row form).</summary>
    public bool KeySetsFiltered => Filter is null || KeySets.Any(k => k.Visible);

    /// <param name="access">What the requester may see; <see cref="AccessFilter.Everything"/> only where the search answers no one (a uniqueness check).</param>
    public SearchQuery(SearchParameters registry, string resourceType, IEnumerable<KeyValuePair<string, string>> parameters, bool lenient, AccessFilter access)
    {
        _registry = registry;
        ResourceType = resourceType;
        if (!ReferenceEquals(access, AccessFilter.Everything))
        {
            // Numbered first ($2…, after the type): every nested set below can then repeat the condition.
            Filter = access;
            FilterSql = "(" + access.Render(2) + ")";
            _rowFilter = access.IndexSql is null ? null : access.RenderIndex(2);
            _args.AddRange(access.Args);
        }
        foreach (var (name, value) in parameters)
        {
            ControlCharacters.RefuseInParameter(name, value); // from the URL, a form, If-None-Exist or a Bundle entry alike
            if (ResultParameters.Contains(name.Split(':')[0])) { ReadResultParameter(name, value, lenient); continue; }
            if (Criterion(resourceType, name, value, lenient, "d.id") is not { } match) continue;
            _where.Add(match.Sql);
            if (match.Set is { } set) KeySets.Add(set);
            Applied.Add(new(name, value));
        }
    }

    /// <summary>A criterion: SQL true when the key column matches, and the key set when it is plain membership of one.</summary>
    sealed record Match(string Sql, KeySet? Set);

    static Match In(string keyColumn, KeySet set) => new($"{keyColumn} in ({set.Sql})", set);

    /// <summary>
    /// Keys from one index table's rows. Under a filter with an index-row form only rows of visible
    /// resources are taken (the rows carry their resource's person and writer), so the set is visible.
    /// </summary>
    KeySet IndexKeys(string select, string where, string? table = null) =>
        (_rowFilter is null ? new KeySet($"select {select} where {where}", Filter is null)
            : new KeySet($"select {select} where {where} and {_rowFilter}", true)) with
        {
            PersonKeyed = select == "rkey from fhir.ix_token",
            PersonsSql = table is null ? null : $"select person from fhir.{table} where {where}" + (_rowFilter is null ? "" : " and " + _rowFilter),
        };

    /// <summary>SQL true when the resource <paramref name="key"/> names is one the requester may see.</summary>
    string Visible(string key) =>
        FilterSql is null ? "true"
        // The inner `d` hides the searched row's alias: the filter speaks of this row.
        : $"exists(select 1 from fhir.mt_doc_resourcedocument d where d.id = {key} and not d.deleted and {FilterSql})";

    // $1 is always the searched resource type; criteria arguments follow it.
    int Arg(object value)
    {
        _args.Add(value);
        return _args.Count + 1;
    }

    // The paging result parameters, read alike by every search (this one and the access log's AuditQuery).
    public static int ParseCount(string value) =>
        int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var c) ? Math.Min(c, MaxCount)
        : throw FhirError.BadRequest($"_count must be a non-negative integer, got '{value}'. (_count は 0 以上の整数です)", "_count");

    public static int ParseOffset(string value) =>
        int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var o) ? o
        : throw FhirError.BadRequest($"_offset must be a non-negative integer, got '{value}'.", "_offset");

    public static TotalMode ParseTotal(string value) => value switch
    {
        "none" => TotalMode.None,
        "estimate" => TotalMode.Estimate,
        "accurate" => TotalMode.Accurate,
        _ => throw FhirError.BadRequest($"_total must be none, estimate or accurate, got '{value}'.", "_total"),
    };

    void ReadResultParameter(string name, string value, bool lenient)
    {
        switch (name)
        {
            case "_count":
                Count = ParseCount(value);
                Applied.Add(new(name, Count.ToString(CultureInfo.InvariantCulture)));
                break;
            case "_offset":
                Offset = ParseOffset(value);
                break;
            case "_total":
                Total = ParseTotal(value);
                Applied.Add(new(name, value));
                break;
            case "_sort":
                var before = Sort.Count;
                foreach (var part in value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                {
                    var desc = part.StartsWith('-');
                    var code = desc ? part[1..] : part;
                    if (!SearchParameters.ColumnParameters.Contains(code) && _registry.Find(ResourceType, code) is null)
                    {
                        if (lenient) continue;
                        throw FhirError.BadRequest($"Cannot sort {ResourceType} by unknown parameter '{code}'. (未知のソートキー)", "_sort");
                    }
                    Sort.Add(new(code, desc));
                }
                // Only the sort keys used: a leniently ignored one stays out of the self link.
                if (Sort.Count > before) Applied.Add(new(name, string.Join(",", Sort.Skip(before).Select(k => (k.Descending ? "-" : "") + k.Code))));
                break;
            case "_include" or "_include:iterate" or "_revinclude" or "_revinclude:iterate":
                var rev = name.StartsWith("_revinclude", StringComparison.Ordinal);
                var parts = value.Split(':');
                if (parts.Length is < 2 or > 3 || !ReferenceTarget.IsResourceType(parts[0]))
                    throw FhirError.BadRequest($"{name} must be 'ResourceType:parameter[:targetType]', got '{value}'.", name);
                var p = _registry.Find(parts[0], parts[1]);
                if (p is null || p.Type != SearchParamType.Reference)
                {
                    if (lenient) return;
                    throw FhirError.BadRequest($"{name}: '{parts[1]}' is not a reference parameter of {parts[0]}.", name);
                }
                if (!rev && parts[0] != ResourceType && !name.EndsWith(":iterate", StringComparison.Ordinal))
                    throw FhirError.BadRequest($"_include must name the searched type {ResourceType}, got '{parts[0]}'.", name);
                var spec = new IncludeSpec(parts[0], parts[1], parts.Length == 3 ? parts[2] : null, name.EndsWith(":iterate", StringComparison.Ordinal));
                (rev ? RevIncludes : Includes).Add(spec);
                Applied.Add(new(name, value));
                break;
            case "_summary" or "_elements" or "_format" or "_pretty":
                // The server's concern, but paging links repeat them (R4 http.html#paging).
                Applied.Add(new(name, value));
                break;
            default:
                break; // _contained, _containedType: not supported, ignored
        }
    }

    /// <summary>What is true when `keyColumn` (a resource key) matches the criterion, or null to skip.</summary>
    Match? Criterion(string type, string name, string value, bool lenient, string keyColumn)
    {
        if (name.StartsWith("_has:", StringComparison.Ordinal))
        {
            ReadsOtherResources = true;
            return Has(type, name, value, lenient) is { } has ? In(keyColumn, has) : null;
        }

        // name[:modifier][.chain]
        string? chain = null;
        var dot = name.IndexOf('.');
        if (dot > 0) { chain = name[(dot + 1)..]; name = name[..dot]; }
        var colon = name.IndexOf(':');
        var code = colon < 0 ? name : name[..colon];
        var modifier = colon < 0 ? null : name[(colon + 1)..];

        if (code == "_id" || code == "_lastUpdated")
            return ColumnCriterion(type, code, modifier, value, keyColumn);

        var p = _registry.Find(type, code);
        if (p is null)
        {
            if (lenient) return null;
            throw FhirError.BadRequest($"Unknown search parameter '{code}' for {type}. (検索パラメータ '{code}' は {type} では使えません)", code);
        }
        var key = p.Key(type);

        if (chain is not null)
        {
            ReadsOtherResources = true;
            if (p.Type != SearchParamType.Reference)
                throw FhirError.BadRequest($"'{code}' is not a reference parameter: it cannot be chained.", code);
            if (chain.Contains('.'))
                throw FhirError.NotSupported($"Chains deeper than one level are not supported ('{name}.{chain}').", code);
            // Without a type modifier the chain applies to every target type that has the chained
            // parameter (R4 search.html#chaining): Observation?patient.name searches Patient (and Group,
            // were it to have one), since the R4 definitions list several targets for `patient`.
            var chainCode = chain.Split(':')[0];
            var targets = modifier is not null ? [modifier]
                : p.Targets.Where(t => SearchParameters.ColumnParameters.Contains(chainCode) || _registry.Find(t, chainCode) is not null).ToList();
            if (targets.Count == 0)
            {
                if (lenient) return null;
                throw FhirError.BadRequest($"Unknown search parameter '{chainCode}' on the targets of '{code}' ({string.Join(", ", p.Targets)}). (検索パラメータ '{chainCode}' は使えません)", name + "." + chain);
            }
            var inner = targets.Select(t => Criterion(t, chain, value, lenient, "x.target")).OfType<Match>().ToList();
            if (inner.Count == 0) return null;
            // The target a chain looks at must be one the requester may see: otherwise
            // DocumentReference?subject.name=… tells the name of a Patient it may not read.
            var allVisible = inner.All(m => m.Set?.Visible == true);
            // A Patient the chain finds stands for its person: the Patients linked to it (Schema/010_identity.sql)
            // match too, so ITI-67 patient.identifier finds a person's documents by any of their identifiers.
            // The Patient found must still be one the requester may see.
            string? linkedKeys = null;
            if (targets.Contains("Patient") && Criterion("Patient", chain, value, lenient, "y.id") is { } linked)
            {
                var linkedVisible = linked.Set?.Visible == true ? "" : " and " + Visible("y.id");
                linkedKeys = "select fhir.same_person_keys(array(select y.id from fhir.mt_doc_resourcedocument y " +
                             $"where y.resource_type = 'Patient' and not y.deleted and {linked.Sql}{linkedVisible}))";
            }
            string matched;
            if (inner.All(m => m.Set is not null))
            {
                // The targets found, as one array the reference index is looked up with (x.target = any(…)):
                // a few Patients, then their documents' rows. (Written as `x.target in (…) or x.target in (…)`,
                // PostgreSQL reads every row of the parameter and tests each: all documents' subjects.)
                var found = inner.Select(m => $"select s.t from ({m.Set!.Sql}) s(t)" + (allVisible ? "" : " where " + Visible("s.t")));
                matched = $"x.target = any(array({string.Join(" union ", linkedKeys is null ? found : found.Append(linkedKeys))}))";
            }
            else
            {
                matched = $"({string.Join(" or ", inner.Select(m => m.Sql))}){(allVisible ? "" : " and " + Visible("x.target"))}";
                if (linkedKeys is not null) matched = $"({matched} or x.target in ({linkedKeys}))";
            }
            return In(keyColumn, IndexKeys("x.rkey from fhir.ix_reference x", $"x.param = ${Arg(key)} and {matched}"));
        }

        if (modifier == "missing")
        {
            var missing = value switch { "true" => true, "false" => false, _ => throw FhirError.BadRequest($"{name} must be true or false.", name) };
            var rows = IndexKeys($"rkey from fhir.{Table(p.Type)}", ParamIs(p, type));
            return missing ? new Match($"{keyColumn} not in ({rows.Sql})", null) : In(keyColumn, rows);
        }

        if (p.Type == SearchParamType.String && modifier is null && SplitEscaped(value, ',') is [var one])
        {
            // One prefix (the common `family=…`, `name=…`): typed, so that the store can page it in its index's order.
            var folded = JapaneseText.Fold(Unescape(one));
            int low = Arg(folded), high = Arg(folded + "\U0010FFFF");
            var range = $"(norm ~>=~ ${low} and norm ~<~ ${high})";
            var set = IndexKeys("rkey from fhir.ix_string", $"{ParamIs(p, type)} and {range}");
            var keys = p.Keys(type);
            var wheres = keys.Select(k => $"param = ${Arg(k)} and {range}" + (_rowFilter is null ? "" : $" and {_rowFilter}")).ToList();
            return In(keyColumn, set with { Prefix = new StringPrefix(wheres, Arg(keys), low) });
        }
        var alternatives = SplitEscaped(value, ',').Select(v => Condition(p, modifier, v, name)).ToList();
        if (modifier == "not")
            return new Match($"{keyColumn} not in (select rkey from fhir.ix_token where param = ${Arg(key)} and ({string.Join(" or ", alternatives)}))", null);
        var table = p.Type == SearchParamType.Reference && modifier == "identifier" ? "ix_token" : Table(p.Type);
        // patient=Patient/… (or subject=…, a bare id of a Patient-only parameter): the Patients' few rows can drive the search.
        var namesPatients = p.Type == SearchParamType.Reference && modifier != "identifier" && SplitEscaped(value, ',').All(v =>
            modifier == "Patient" || (modifier is null && (ReferenceTarget.Local(Unescape(v)) is { Type: "Patient" }
                || (!v.Contains('/') && p.Targets.Count == 1 && p.Targets[0] == "Patient"))));
        return In(keyColumn, IndexKeys($"rkey from fhir.{table}", $"{ParamIs(p, type)} and ({string.Join(" or ", alternatives)})", namesPatients ? table : null));
    }

    /// <summary>The rows of <paramref name="p"/> on <paramref name="type"/>: its own, and for a string parameter whose parts are
    /// other parameters' rows (SearchParam.PartsIn: `name` → `family`, `given`) theirs too.</summary>
    string ParamIs(SearchParam p, string type, string column = "param") =>
        p.ReadsCodes is null ? $"{column} = ${Arg(p.Key(type))}" : $"{column} = any(${Arg(p.Keys(type))})";

    static string Table(SearchParamType t) => t switch
    {
        SearchParamType.String => "ix_string",
        SearchParamType.Token => "ix_token",
        SearchParamType.Reference => "ix_reference",
        SearchParamType.Date => "ix_date",
        SearchParamType.Number or SearchParamType.Quantity => "ix_number",
        SearchParamType.Uri => "ix_uri",
        _ => throw new InvalidOperationException("not indexed: " + t),
    };

    string Condition(SearchParam p, string? modifier, string value, string name)
    {
        void Allow(string?[] allowed)
        {
            if (!allowed.Contains(modifier))
                throw FhirError.NotSupported($"Modifier ':{modifier}' is not supported for {p.Type.ToString().ToLowerInvariant()} parameter '{p.Code}'. (修飾子 :{modifier} は使えません)", name);
        }
        switch (p.Type)
        {
            case SearchParamType.String:
                Allow([null, "exact", "contains"]);
                value = Unescape(value);
                return modifier switch
                {
                    "exact" => $"exact = ${Arg(value)}",
                    "contains" => $"norm like ${Arg("%" + JapaneseText.EscapeLike(JapaneseText.Fold(value)) + "%")}",
                    // Starts-with as a range on the byte-ordered (text_pattern_ops) index rather than LIKE:
                    // a prepared statement can then use one generic plan instead of re-planning each call.
                    _ => $"(norm ~>=~ ${Arg(JapaneseText.Fold(value))} and norm ~<~ ${Arg(JapaneseText.Fold(value) + "\U0010FFFF")})",
                };
            case SearchParamType.Token:
                Allow([null, "not", "text", "of-type"]);
                if (modifier == "text") return $"display like ${Arg(JapaneseText.EscapeLike(JapaneseText.Fold(value)) + "%")}";
                if (modifier == "of-type")
                {
                    var parts = SplitEscaped(value, '|');
                    if (parts.Count != 3) throw FhirError.BadRequest($"{name} takes 'typeSystem|typeCode|value'.", name);
                    return $"(type_system = ${Arg(parts[0])} and type_code = ${Arg(parts[1])} and code = ${Arg(parts[2])})";
                }
                return TokenCondition(value);
            case SearchParamType.Reference:
                // :identifier matches Reference.identifier, indexed as a token row (R4 search.html#reference).
                if (modifier == "identifier") return TokenCondition(value);
                if (modifier is not null && !ReferenceTarget.IsResourceType(modifier)) Allow([null]);
                value = Unescape(value);
                if (modifier is not null) return $"target = ${Arg(modifier + "/" + value)}";
                if (value.Contains("://", StringComparison.Ordinal)) return $"target = ${Arg(value)}";
                if (ReferenceTarget.Parse(value) is { } t) return $"target = ${Arg(t.Type + "/" + t.Id)}";
                return $"target_id = ${Arg(value)}";
            case SearchParamType.Uri:
                Allow([null, "below", "above"]);
                value = Unescape(value);
                return modifier switch
                {
                    "below" => $"uri like ${Arg(JapaneseText.EscapeLike(value) + "%")}",
                    "above" => $"${Arg(value)} like (replace(replace(uri, '%', '\\%'), '_', '\\_') || '%')",
                    _ => $"uri = ${Arg(value)}",
                };
            case SearchParamType.Date:
                Allow([null]);
                return DateCondition("low", "high", value, name);
            case SearchParamType.Number:
            case SearchParamType.Quantity:
                Allow([null]);
                return NumberCondition(p, value, name);
            default:
                throw FhirError.NotSupported($"Parameter '{p.Code}' of type {p.Type} is not searchable here.", name);
        }
    }

    /// <summary>system|code, |code, system| or code against the token columns.</summary>
    string TokenCondition(string value)
    {
        var bar = IndexOfUnescaped(value, '|');
        if (bar < 0) return $"code = ${Arg(Unescape(value))}";
        var system = Unescape(value[..bar]);
        var codeValue = Unescape(value[(bar + 1)..]);
        if (system.Length == 0) return $"(system is null and code = ${Arg(codeValue)})";
        if (codeValue.Length == 0) return $"system = ${Arg(system)}";
        return $"(system = ${Arg(system)} and code = ${Arg(codeValue)})";
    }

    static readonly string[] Prefixes = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"];

    static (string Prefix, string Value) SplitPrefix(string value) =>
        value.Length > 2 && Prefixes.Contains(value[..2]) && !char.IsLetter(value[2]) ? (value[..2], value[2..]) : ("eq", value);

    string DateCondition(string lowCol, string highCol, string raw, string name)
    {
        var (prefix, value) = SplitPrefix(raw);
        if (!DateRange.TryParse(value, out var pl, out var ph))
            throw FhirError.BadRequest($"'{value}' is not a FHIR date/dateTime (e.g. 2024-04-01 or 2024-04-01T09:00:00+09:00). (日付の形式が不正です)", name);
        if (prefix == "ap")
        {
            var gap = TimeSpan.FromTicks(Math.Max(TimeSpan.TicksPerDay, Math.Abs((DateTimeOffset.UtcNow - pl).Ticks) / 10));
            (pl, ph) = (pl - gap, ph + gap);
        }
        int l = Arg(pl), h = Arg(ph);
        return prefix switch
        {
            "eq" => $"({lowCol} >= ${l} and {highCol} <= ${h})",
            "ne" => $"not ({lowCol} >= ${l} and {highCol} <= ${h})",
            "gt" => $"{highCol} > ${h}",
            "lt" => $"{lowCol} < ${l}",
            // ge/le = gt/lt or eq (R4 search.html#prefix): a range that starts before (ends after) the
            // parameter's range and ends (starts) within it is neither.
            "ge" => $"({highCol} > ${h} or ({lowCol} >= ${l} and {highCol} <= ${h}))",
            "le" => $"({lowCol} < ${l} or ({lowCol} >= ${l} and {highCol} <= ${h}))",
            "sa" => $"{lowCol} > ${h}",
            "eb" => $"{highCol} < ${l}",
            _ => $"({lowCol} <= ${h} and {highCol} >= ${l})", // ap: overlaps the widened range
        };
    }

    string NumberCondition(SearchParam p, string raw, string name)
    {
        var (prefix, value) = SplitPrefix(raw);
        string? system = null, unit = null;
        if (p.Type == SearchParamType.Quantity)
        {
            var parts = SplitEscaped(value, '|');
            if (parts.Count is 2 or > 3) throw FhirError.BadRequest($"A quantity is 'number' or 'number|system|code', got '{value}'.", name);
            value = parts[0];
            if (parts.Count == 3) { system = parts[1].Length == 0 ? null : parts[1]; unit = parts[2].Length == 0 ? null : parts[2]; }
        }
        if (!decimal.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var x))
            throw FhirError.BadRequest($"'{value}' is not a number. (数値ではありません)", name);
        // Implicit range from the significant digits: 100 means [99.5, 100.5) (R4 search.html#number).
        var decimals = value.Contains('.') ? value.Length - value.IndexOf('.') - 1 : 0;
        var half = 0.5m / (decimal)Math.Pow(10, decimals);
        int v = Arg(x);
        var cond = prefix switch
        {
            "eq" => $"(value >= ${Arg(x - half)} and value < ${Arg(x + half)})",
            "ne" => $"not (value >= ${Arg(x - half)} and value < ${Arg(x + half)})",
            "gt" or "sa" => $"value > ${v}",
            "lt" or "eb" => $"value < ${v}",
            "ge" => $"value >= ${v}",
            "le" => $"value <= ${v}",
            _ => $"(value >= ${Arg(x - Math.Abs(x) / 10)} and value <= ${Arg(x + Math.Abs(x) / 10)})",
        };
        if (system is not null) cond += $" and system = ${Arg(system)}";
        if (unit is not null) cond += $" and code = ${Arg(unit)}";
        return "(" + cond + ")";
    }

    Match ColumnCriterion(string type, string code, string? modifier, string value, string keyColumn)
    {
        if (modifier is not null and not "missing")
            throw FhirError.NotSupported($"Modifier ':{modifier}' is not supported for '{code}'.", code);
        if (modifier == "missing") return new(value == "true" ? "false" : "true", null); // every resource has both
        if (code == "_id")
        {
            var keys = SplitEscaped(value, ',').Select(id => type + "/" + Unescape(id)).ToArray();
            return new($"{keyColumn} = any(${Arg(keys)})", null);
        }
        var conds = SplitEscaped(value, ',').Select(v => DateCondition("t.last_updated", "t.last_updated", v, code));
        return In(keyColumn, new KeySet($"select t.id from fhir.mt_doc_resourcedocument t where t.resource_type = ${Arg(type)} and not t.deleted and ({string.Join(" or ", conds)})", Filter is null));
    }

    // _has:Observation:patient:code=1234 → keys that Observations matching code=1234 refer to by `patient`.
    // Only referrers the requester may see count: a hidden document must not mark its patient.
    KeySet? Has(string type, string name, string value, bool lenient)
    {
        var parts = name.Split(':', 4);
        if (parts.Length != 4 || !ReferenceTarget.IsResourceType(parts[1]))
            throw FhirError.BadRequest($"_has takes '_has:Type:referenceParam:searchParam=value', got '{name}'.", name);
        var (source, refCode, inner) = (parts[1], parts[2], parts[3]);
        if (inner.StartsWith("_has:", StringComparison.Ordinal))
            throw FhirError.NotSupported("_has is supported one level deep.", name);
        var rp = _registry.Find(source, refCode);
        if (rp is null || rp.Type != SearchParamType.Reference)
            throw FhirError.BadRequest($"_has: '{refCode}' is not a reference parameter of {source}.", name);
        // A leniently ignored inner parameter ignores the whole _has, rather than matching every referrer.
        if (Criterion(source, inner, value, lenient, "h.rkey") is not { } criterion) return null;
        // The referrer's own reference row carries its person and writer: the index-row form confines it there.
        var referrerVisible = criterion.Set?.Visible == true || Filter is null ? ""
            : _rowFilter is not null ? " and " + _rowFilter : " and " + Visible("h.rkey");
        // The targets themselves are not known to be visible: the searched row's own filter decides them.
        return new KeySet($"select h.target from fhir.ix_reference h where h.param = ${Arg(rp.Key(source))} and h.target like ${Arg(type + "/%")} and {criterion.Sql}{referrerVisible}",
            Filter is null);
    }

    /// <summary>ORDER BY for _sort, always ending in the key so pages are stable.</summary>
    public string OrderSql()
    {
        var sb = new StringBuilder();
        foreach (var s in Sort)
        {
            string expr;
            if (s.Code == "_id") expr = "d.id";
            else if (s.Code == "_lastUpdated") expr = "d.last_updated";
            else
            {
                var p = _registry.Find(ResourceType, s.Code)!;
                var (col, table) = p.Type switch
                {
                    SearchParamType.String => ("norm", "ix_string"),
                    SearchParamType.Token => ("code", "ix_token"),
                    SearchParamType.Reference => ("target", "ix_reference"),
                    SearchParamType.Date => (s.Descending ? "high" : "low", "ix_date"),
                    SearchParamType.Uri => ("uri", "ix_uri"),
                    _ => ("value", "ix_number"),
                };
                expr = $"(select {(s.Descending ? "max" : "min")}({col}) from fhir.{table} o where o.rkey = d.id and {ParamIs(p, ResourceType, "o.param")})";
            }
            sb.Append(expr).Append(s.Descending ? " desc nulls last, " : " asc nulls last, ");
        }
        return sb.Append("d.id").ToString();
    }

    static int IndexOfUnescaped(string s, char c)
    {
        for (var i = 0; i < s.Length; i++)
        {
            if (s[i] == '\\') { i++; continue; }
            if (s[i] == c) return i;
        }
        return -1;
    }

    /// <summary>Splits on `sep` except where escaped with a backslash (R4 search.html#escaping).</summary>
    static List<string> SplitEscaped(string s, char sep)
    {
        var result = new List<string>();
        var start = 0;
        for (var i = 0; i < s.Length; i++)
        {
            if (s[i] == '\\') { i++; continue; }
            if (s[i] == sep) { result.Add(s[start..i]); start = i + 1; }
        }
        result.Add(s[start..]);
        return result;
    }

    static string Unescape(string s) => s.Replace("\\,", ",").Replace("\\|", "|").Replace("\\$", "$").Replace("\\\\", "\\");
}

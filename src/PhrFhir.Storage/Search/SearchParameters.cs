using Hl7.Fhir.Model;

namespace PhrFhir.Storage.Search;

/// <summary>One search parameter as the index uses it: straight from a SearchParameter definition.</summary>
public sealed record SearchParam(
    string Resource, string Code, SearchParamType Type, string Expression, IReadOnlyList<string> Targets,
    string Url, string? Description)
{
    /// <summary>The index rows' `param` value: "{ResourceType}.{code}" — the code of <see cref="RowsOf"/> when set.</summary>
    public string Key(string resourceType) => resourceType + "." + (RowsOf ?? Code);

    /// <summary>
    /// Another string parameter of the same type with the very same expression for that type (R4 Patient.phonetic,
    /// `Patient.name | Person.name | …`, selects on a Patient what Patient.name selects): its rows are this parameter's rows, so the indexer writes them once,
    /// under that code, and searches on this one read them (<see cref="SearchParameters"/>, issue #12).
    /// </summary>
    public string? RowsOf { get; internal set; }

    /// <summary>
    /// Parts of this parameter's values that are other string parameters' rows (R4 Patient.name: its `family` and `given`
    /// are the rows of `Patient.name.family` and `Patient.name.given`; Patient.address: `city`, `state`, `postalCode`,
    /// `country`): element name → that parameter's code. The indexer leaves these parts out of this parameter's rows and a
    /// search on it reads those parameters' rows as well (<see cref="Keys"/>), so a Japanese Patient's name is 8 string rows
    /// instead of 13 (issue #12). Null when none.
    /// </summary>
    public IReadOnlyDictionary<string, string>? PartsIn { get; internal set; }

    /// <summary>The codes whose rows a search on this parameter reads, when more than <see cref="Key"/>'s (see <see cref="PartsIn"/>).</summary>
    public IReadOnlyList<string>? ReadsCodes { get; internal set; }

    /// <summary>The index rows' `param` values a search on this parameter reads: <see cref="Key"/>, and its parts' keys.</summary>
    public string[] Keys(string resourceType) => ReadsCodes is null ? [Key(resourceType)] : [.. ReadsCodes.Select(c => resourceType + "." + c)];

    Hl7.FhirPath.CompiledExpression? _compiled;

    /// <summary>The expression compiled once, narrowed to this parameter's resource type.</summary>
    public Hl7.FhirPath.CompiledExpression Compiled => _compiled ??= SearchExpressions.Compile(Resource, Expression);
}

/// <summary>
/// The search parameters the server indexes, from their definitions: the R4 core ones the SDK carries
/// (ModelInfo.SearchParameters, taken from the spec's SearchParameter resources) plus those of the IGs
/// loaded at start (JP Core, IHE MHD). Extraction, query parsing and the CapabilityStatement all read
/// this one registry, so they cannot drift apart. Composite and special parameters are not indexed and
/// therefore not offered.
/// </summary>
public sealed class SearchParameters
{
    static readonly HashSet<SearchParamType> Indexed =
        [SearchParamType.String, SearchParamType.Token, SearchParamType.Reference, SearchParamType.Date,
         SearchParamType.Number, SearchParamType.Quantity, SearchParamType.Uri];

    // Resource-level parameters answered from the document's own columns, not from index rows.
    public static readonly IReadOnlySet<string> ColumnParameters = new HashSet<string> { "_id", "_lastUpdated" };

    readonly Dictionary<string, Dictionary<string, SearchParam>> _byType = new();
    readonly Dictionary<string, SearchParam> _common = new();

    // R4 resource.html#search: the parameters every resource has. The SDK's ModelInfo.SearchParameters
    // does not carry them, so they are declared here as the spec's SearchParameter resources define them.
    static readonly SearchParam[] ResourceLevel =
    [
        new("Resource", "_id", SearchParamType.Token, "Resource.id", [], "http://hl7.org/fhir/SearchParameter/Resource-id", "Logical id of this artifact"),
        new("Resource", "_lastUpdated", SearchParamType.Date, "Resource.meta.lastUpdated", [], "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated", "When the resource version last changed"),
        new("Resource", "_tag", SearchParamType.Token, "Resource.meta.tag", [], "http://hl7.org/fhir/SearchParameter/Resource-tag", "Tags applied to this resource"),
        new("Resource", "_profile", SearchParamType.Uri, "Resource.meta.profile", [], "http://hl7.org/fhir/SearchParameter/Resource-profile", "Profiles this resource claims to conform to"),
        new("Resource", "_security", SearchParamType.Token, "Resource.meta.security", [], "http://hl7.org/fhir/SearchParameter/Resource-security", "Security Labels applied to this resource"),
        new("Resource", "_source", SearchParamType.Uri, "Resource.meta.source", [], "http://hl7.org/fhir/SearchParameter/Resource-source", "Identifies where the resource comes from"),
    ];

    public static SearchParameters CreateDefault(IEnumerable<SearchParameter>? fromIgs = null)
    {
        var registry = new SearchParameters();
        foreach (var p in ResourceLevel) registry.Add(p.Resource, p);
        foreach (var d in ModelInfo.SearchParameters)
        {
            if (d.Expression is null || d.Resource is null || !Indexed.Contains(d.Type) && !ColumnParameters.Contains(d.Code ?? d.Name!)) continue;
            registry.Add(d.Resource, new SearchParam(d.Resource, d.Code ?? d.Name!, d.Type, d.Expression,
                (d.Target ?? []).Select(t => t.ToString()).ToArray(), d.Url ?? "", d.Description?.Value));
        }
        foreach (var sp in fromIgs ?? [])
            registry.AddDefinition(sp);
        return registry;
    }

    /// <summary>Adds a SearchParameter resource of an IG; one that redefines a known code replaces it.</summary>
    public void AddDefinition(SearchParameter sp)
    {
        if (sp.Type is not { } type || !Indexed.Contains(type) || string.IsNullOrEmpty(sp.Expression) || sp.Code is null) return;
        foreach (var b in sp.Base ?? [])
        {
            var resource = b?.ToString();
            if (resource is null) continue;
            Add(resource, new SearchParam(resource, sp.Code, type, sp.Expression,
                (sp.Target ?? []).Select(t => t?.ToString() ?? "").ToArray(), sp.Url ?? "", sp.Description));
        }
    }

    void Add(string resource, SearchParam p)
    {
        if (resource is "Resource" or "DomainResource")
        {
            if (p.Code == "_text" || p.Code == "_content") return;
            _common[p.Code] = p;
            return;
        }
        if (!_byType.TryGetValue(resource, out var map)) _byType[resource] = map = new(StringComparer.Ordinal);
        map[p.Code] = p;
        ShareIdenticalRows(map);
    }

    /// <summary>
    /// String parameters of one type with the same expression select the same values, so their index rows would be
    /// the same rows twice (a Japanese Patient's six name rows again as `phonetic`): each such group is stored once,
    /// under its first code in ordinal order (name before phonetic); and the fields another parameter selects on its own
    /// (`family` of `name`) are stored under that one only (<see cref="SearchParam.PartsIn"/>). Recomputed whenever a
    /// definition is added or replaced (an IG may redefine one of them). Only strings: the consent rules read token, date and reference rows
    /// by their own codes (Security/ConsentRules), and no such pair of those types exists in R4.
    /// </summary>
    static void ShareIdenticalRows(Dictionary<string, SearchParam> map)
    {
        var owners = new Dictionary<string, SearchParam>(StringComparer.Ordinal); // narrowed expression → the parameter storing its rows
        foreach (var group in map.Values.Where(p => p.Type == SearchParamType.String)
                     .GroupBy(p => SearchExpressions.Narrow(p.Resource, p.Expression), StringComparer.Ordinal))
        {
            var first = group.MinBy(p => p.Code, StringComparer.Ordinal)!;
            foreach (var p in group) p.RowsOf = ReferenceEquals(p, first) ? null : first.Code;
            owners[group.Key] = first;
        }
        // A parameter whose expression is another's plus one element that parameter's values are split into (`Patient.name.family`
        // after `Patient.name`, a HumanName) selects exactly those parts: they are stored once, under the narrower parameter.
        foreach (var (expression, owner) in owners)
        {
            var parts = SearchIndexer.StringParts(SearchExpressions.TypeOfPath(expression))
                .Select(element => (element, part: owners.GetValueOrDefault(expression + "." + element)))
                .Where(x => x.part is not null && x.part.Resource == owner.Resource)
                .ToDictionary(x => x.element, x => x.part!.Code, StringComparer.Ordinal);
            owner.PartsIn = parts.Count == 0 ? null : parts;
        }
        foreach (var p in map.Values.Where(p => p.Type == SearchParamType.String))
            p.ReadsCodes = (p.RowsOf is null ? p : map[p.RowsOf]) is { PartsIn: { } owned } stored ? [stored.Code, .. owned.Values.Distinct()] : null;
    }

    public SearchParam? Find(string resourceType, string code) =>
        _byType.TryGetValue(resourceType, out var map) && map.TryGetValue(code, out var p) ? p
        : _common.GetValueOrDefault(code);

    /// <summary>Every parameter of a type, its own and the resource-level ones.</summary>
    public IEnumerable<SearchParam> For(string resourceType) =>
        (_byType.TryGetValue(resourceType, out var map) ? map.Values : Enumerable.Empty<SearchParam>())
        .Concat(_common.Values.Where(c => map is null || !map.ContainsKey(c.Code)));
}

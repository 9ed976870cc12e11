using Hl7.Fhir.FhirPath;
using Hl7.Fhir.Model;

namespace PhrFhir.Storage.Search;

/// <summary>
/// Extracts index values from a resource by evaluating each search parameter's FhirPath expression
/// (the definition is the source of truth) and turning what it selects into rows by the element's type.
/// </summary>
public sealed partial class SearchIndexer(SearchParameters parameters)
{
    // `resolve() is Patient` in R4 expressions only needs the type of the target: give it an empty
    // resource of the type the reference names, without reading the database.
    static readonly FhirEvaluationContext Context = new()
    {
        ElementResolver = reference =>
        {
            var type = ReferenceTarget.TypeOf(reference);
            var clr = type is null ? null : ModelInfo.GetTypeForFhirType(type);
            return clr is null ? null! : new PocoNode((Base)Activator.CreateInstance(clr)!, null, null, type);
        },
    };

    public SearchParameters Parameters => parameters;

    public IndexRows Extract(Resource resource)
    {
        var rows = new IndexRows();
        var type = resource.TypeName;
        var root = new PocoNode(resource, null, null, null);
        foreach (var p in parameters.For(type))
        {
            if (SearchParameters.ColumnParameters.Contains(p.Code)) continue;
            if (p.RowsOf is not null) continue; // its rows are another parameter's (SearchParam.RowsOf)
            IEnumerable<Base> values;
            try { values = p.Compiled.Invoke([root], Context).Select(n => n.Poco).OfType<Base>().ToList(); }
            catch (Exception) { continue; } // an expression for another type's shape: nothing to index here
            var key = p.Key(type);
            foreach (var v in values) Add(rows, p, key, v);
        }
        // Not a search parameter: which Binary holds a document's bytes, so that access to the
        // document can reach its Binary (Security/AccessPolicy). Relative or our own absolute URLs.
        if (resource is DocumentReference doc)
            foreach (var content in doc.Content)
                if (content.Attachment?.Url is { } url && BinaryUrl().Match(url) is { Success: true } m)
                    rows.References.Add(new("DocumentReference._binary", "Binary/" + m.Groups[1].Value, m.Groups[1].Value));
        return rows;
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"(?:^|/)Binary/([A-Za-z0-9\-\.]{1,64})$")]
    private static partial System.Text.RegularExpressions.Regex BinaryUrl();

    /// <summary>The Patient whose compartment the resource is in (the distribution key), or null.</summary>
    public static string? PersonOf(Resource resource, IndexRows rows)
    {
        if (resource is Patient) return resource.Id;
        // A Binary (a document's bytes) belongs to whoever its securityContext names (R4 Binary).
        if (resource is Binary { SecurityContext.Reference: { } context } && ReferenceTarget.Local(context) is { Type: "Patient" } owner)
            return owner.Id;
        foreach (var code in (string[])[".patient", ".subject", ".beneficiary", ".individual"])
            foreach (var r in rows.References)
                if (r.Param.EndsWith(code, StringComparison.Ordinal) && r.Target.StartsWith("Patient/", StringComparison.Ordinal))
                    return r.TargetId;
        return null;
    }

    static void Add(IndexRows rows, SearchParam p, string key, Base value)
    {
        switch (p.Type)
        {
            case SearchParamType.String: AddString(rows, key, value, p.PartsIn); break;
            case SearchParamType.Token: AddToken(rows, key, value); break;
            case SearchParamType.Reference: AddReference(rows, key, value); break;
            case SearchParamType.Date: AddDate(rows, key, value); break;
            case SearchParamType.Number:
                if (value is FhirDecimal { Value: { } d }) rows.Numbers.Add(new(key, d, null, null));
                else if (value is Integer { Value: { } i }) rows.Numbers.Add(new(key, i, null, null));
                else if (value is PositiveInt { Value: { } pi }) rows.Numbers.Add(new(key, pi, null, null));
                else if (value is UnsignedInt { Value: { } ui }) rows.Numbers.Add(new(key, ui, null, null));
                break;
            case SearchParamType.Quantity:
                if (value is Quantity { Value: { } qv } q) rows.Numbers.Add(new(key, qv, q.System, q.Code ?? q.Unit));
                break;
            case SearchParamType.Uri:
                if (value is PrimitiveType { JsonValue: string u } && u.Length > 0) rows.Uris.Add(new(key, u));
                break;
        }
    }

    /// <summary>
    /// The elements a string parameter's HumanName or Address values are matched by (R4 search.html#string: "any of the
    /// string fields in the HumanName … family, given, prefix, suffix, and/or text"; the Address's line, city, district,
    /// state, country, postalCode and text), by their FHIR names; none for other types (a primitive is matched whole).
    /// </summary>
    public static IReadOnlyList<string> StringParts(Type? type) =>
        type == typeof(HumanName) ? ["family", "given", "prefix", "suffix", "text"]
        : type == typeof(Address) ? ["line", "city", "district", "state", "postalCode", "country", "text"]
        : [];

    /// <summary>A string value's rows; parts in <paramref name="storedElsewhere"/> are left out (SearchParam.PartsIn).</summary>
    static void AddString(IndexRows rows, string key, Base value, IReadOnlyDictionary<string, string>? storedElsewhere)
    {
        void One(string element, string? s)
        {
            if (string.IsNullOrWhiteSpace(s) || storedElsewhere?.ContainsKey(element) == true) return;
            if (s.Length > 2000) s = s[..2000]; // bounded: a string index row is for matching, not storage
            rows.Strings.Add(new(key, JapaneseText.Fold(s), s));
        }
        switch (value)
        {
            case HumanName n:
                One("family", n.Family); One("text", n.Text);
                foreach (var g in n.Given ?? []) One("given", g);
                foreach (var x in n.Prefix ?? []) One("prefix", x);
                foreach (var x in n.Suffix ?? []) One("suffix", x);
                break;
            case Address a:
                foreach (var l in a.Line ?? []) One("line", l);
                One("city", a.City); One("district", a.District); One("state", a.State); One("postalCode", a.PostalCode); One("country", a.Country); One("text", a.Text);
                break;
            case PrimitiveType { JsonValue: { } o }:
                One("", o.ToString());
                break;
        }
    }

    static void AddToken(IndexRows rows, string key, Base value)
    {
        static string? Text(string? s) => string.IsNullOrWhiteSpace(s) ? null : JapaneseText.Fold(s);
        switch (value)
        {
            case Coding c:
                rows.Tokens.Add(new(key, c.System, c.Code, Text(c.Display)));
                break;
            case CodeableConcept cc:
                foreach (var c in cc.Coding ?? []) rows.Tokens.Add(new(key, c.System, c.Code, Text(c.Display ?? cc.Text)));
                // :text searches CodeableConcept.text as well as Coding.display (R4 search.html#token): a row
                // of its own unless a coding's row already carries it.
                if (cc.Text is not null && !(cc.Coding ?? []).Any(c => (c.Display ?? cc.Text) == cc.Text))
                    rows.Tokens.Add(new(key, null, null, Text(cc.Text)));
                break;
            case Identifier id:
                var type = id.Type?.Coding?.FirstOrDefault();
                rows.Tokens.Add(new(key, id.System, id.Value, Text(id.Type?.Text), type?.System, type?.Code));
                break;
            case ContactPoint cp:
                rows.Tokens.Add(new(key, cp.System?.ToString().ToLowerInvariant(), cp.Value, null));
                break;
            case PrimitiveType and ICoded coded:
                // A code bound to one code system (Code<T>) carries its system: gender=http://hl7.org/fhir/administrative-gender|female.
                foreach (var c in coded.ToCodings().Where(c => c.Code is not null)) rows.Tokens.Add(new(key, c.System, c.Code, null));
                break;
            case FhirBoolean { Value: { } b }:
                rows.Tokens.Add(new(key, null, b ? "true" : "false", null));
                break;
            case PrimitiveType { JsonValue: { } o }:
                rows.Tokens.Add(new(key, null, o is bool bo ? (bo ? "true" : "false") : o.ToString(), null));
                break;
        }
    }

    static void AddReference(IndexRows rows, string key, Base value)
    {
        // Reference.identifier (a logical reference, e.g. MHD's referenceIdList in context.related) is a
        // token row under the same parameter, for the :identifier modifier.
        if (value is ResourceReference { Identifier: { Value: not null } id })
            rows.Tokens.Add(new(key, id.System, id.Value, null));
        var reference = value switch
        {
            ResourceReference r => r.Reference,
            PrimitiveType { JsonValue: string s } => s, // canonical / uri references
            _ => null,
        };
        if (string.IsNullOrEmpty(reference) || reference.StartsWith('#')) return;
        var local = ReferenceTarget.Local(reference);
        rows.References.Add(local is { } l ? new(key, l.Type + "/" + l.Id, l.Id) : new(key, reference, null));
    }

    static void AddDate(IndexRows rows, string key, Base value)
    {
        switch (value)
        {
            case Period p:
                DateTimeOffset low = DateTimeOffset.MinValue, high = DateTimeOffset.MaxValue;
                if (p.Start is { } s && DateRange.TryParse(s, out var sl, out _)) low = sl;
                if (p.End is { } e && DateRange.TryParse(e, out _, out var eh)) high = eh;
                if (p.Start is not null || p.End is not null) rows.Dates.Add(new(key, low, high));
                break;
            case Timing t:
                foreach (var ev in t.EventElement ?? []) AddDate(rows, key, ev);
                break;
            case PrimitiveType { JsonValue: { } o }:
                var text = o switch { DateTimeOffset dto => dto.ToString("o"), _ => o.ToString() };
                if (text is not null && DateRange.TryParse(text, out var lo, out var hi)) rows.Dates.Add(new(key, lo, hi));
                break;
        }
    }
}

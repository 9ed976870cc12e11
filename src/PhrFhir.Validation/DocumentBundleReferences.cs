using Hl7.Fhir.Model;

namespace PhrFhir.Validation;

/// <summary>
/// The reference rules of a FHIR document (a Bundle of type <c>document</c>) that no profile or
/// invariant encodes, checked by us after the validator. R4 documents.html §3.3.1: the resources the
/// Composition references from <c>subject</c>, <c>encounter</c>, <c>author</c>, <c>attester.party</c>,
/// <c>custodian</c>, <c>event.detail</c> and (at any depth of sections) <c>section.author</c>,
/// <c>section.focus</c> and <c>section.entry</c> SHALL be included in the Bundle. Every other reference
/// in the document resolves as R4 bundle.html#references says: a <c>urn:uuid:</c>/<c>urn:oid:</c> or a
/// relative reference whose entry has no RESTful base can only name an entry of the Bundle; an absolute
/// URL (or a relative one under an entry's RESTful <c>fullUrl</c>) may point to a server outside.
/// </summary>
/// <remarks>
/// Why our own pass and not a validator setting: Firely 3.6 follows a reference inside a Bundle only to
/// validate the target against its profile; a reference it cannot resolve is skipped unless the profile
/// constrains <c>aggregation</c> (which the JP document profiles do not), and no
/// <c>ValidationSettings</c> option makes resolution itself a rule. Walking the document is cheap
/// (a few hundred elements) and gives the exact path of every unresolved reference.
/// </remarks>
public static class DocumentBundleReferences
{
    /// <summary>Elements of the Composition whose targets SHALL be in the document (R4 documents.html §3.3.1).</summary>
    private static readonly HashSet<string> CompositionRequired = new(StringComparer.Ordinal)
    {
        "subject", "encounter", "author", "attester.party", "custodian", "event.detail", "section.author", "section.focus", "section.entry",
    };

    /// <summary>An error for every reference of a document Bundle that does not resolve as the rules above require; nothing for other instances.</summary>
    public static IEnumerable<OperationOutcome.IssueComponent> Check(Resource instance)
    {
        if (instance is not Bundle { Type: Bundle.BundleType.Document } document) return [];
        var fullUrls = new HashSet<string>(document.Entry.Select(e => e.FullUrl).OfType<string>(), StringComparer.Ordinal);
        var typeAndId = new HashSet<string>(document.Entry.Select(e => e.Resource).OfType<Resource>().Where(r => r.Id is not null).Select(r => r.TypeName + "/" + r.Id), StringComparer.Ordinal);
        var issues = new List<OperationOutcome.IssueComponent>();
        for (var i = 0; i < document.Entry.Count; i++)
        {
            if (document.Entry[i].Resource is not { } resource) continue;
            var isComposition = i == 0 && resource is Composition;
            var baseUrl = RestfulBase(document.Entry[i].FullUrl, resource.TypeName);
            foreach (var (path, logicalPath, reference) in References(resource, $"Bundle.entry[{i}].resource", ""))
            {
                if (reference.Reference is not { Length: > 0 } target || target.StartsWith('#')) continue; // logical or contained
                if (Resolves(target, baseUrl, fullUrls, typeAndId)) continue;
                if (isComposition && CompositionRequired.Contains(logicalPath))
                    issues.Add(Unresolved(path,
                        $"Composition.{logicalPath} refers to {target}, which is not an entry of this document: a FHIR document includes every resource its Composition references there (R4 documents.html §3.3.1).",
                        $"Composition.{logicalPath} の参照先 {target} がこの文書（Bundle）に含まれていません。Composition から参照するリソースは文書に含める必要があります（FHIR R4 文書の規則）。"));
                else if (!MayPointOutside(target, baseUrl))
                    issues.Add(Unresolved(path,
                        $"{target} is not an entry of this document and cannot name anything outside it (a urn: or relative reference in a document resolves only within its Bundle, R4 bundle.html#references).",
                        $"参照 {target} はこの文書（Bundle）のどのエントリにも一致しません。urn: や相対参照は文書の中でしか解決できません。"));
            }
        }
        return issues;
    }

    /// <summary>R4 bundle.html#references: an absolute reference matches a fullUrl; a relative one is read against the entry's RESTful base, else matched by type and id.</summary>
    private static bool Resolves(string target, string? baseUrl, HashSet<string> fullUrls, HashSet<string> typeAndId)
    {
        var withoutVersion = target.Split("/_history/")[0];
        if (IsAbsolute(target)) return fullUrls.Contains(target) || fullUrls.Contains(withoutVersion);
        if (baseUrl is not null && fullUrls.Contains(baseUrl + withoutVersion)) return true;
        return typeAndId.Contains(withoutVersion);
    }

    private static bool MayPointOutside(string target, string? baseUrl) =>
        target.StartsWith("http://", StringComparison.Ordinal) || target.StartsWith("https://", StringComparison.Ordinal)
        || (!IsAbsolute(target) && baseUrl is not null);

    private static bool IsAbsolute(string target) => target.StartsWith("urn:", StringComparison.Ordinal) || target.Contains("://", StringComparison.Ordinal);

    /// <summary>The service base of a RESTful fullUrl (<c>http://x/fhir/Patient/1</c> → <c>http://x/fhir/</c>), else null.</summary>
    private static string? RestfulBase(string? fullUrl, string type)
    {
        if (fullUrl is null || !(fullUrl.StartsWith("http://", StringComparison.Ordinal) || fullUrl.StartsWith("https://", StringComparison.Ordinal))) return null;
        var at = fullUrl.LastIndexOf("/" + type + "/", StringComparison.Ordinal);
        return at < 0 ? null : fullUrl[..(at + 1)];
    }

    /// <summary>Every Reference below a node, with its FhirPath (indices on repeating elements) and its element path without indices (sections folded: <c>section.entry</c>).</summary>
    private static IEnumerable<(string Path, string LogicalPath, ResourceReference Reference)> References(Base node, string path, string logicalPath)
    {
        // EnumerateElements gives a repeating element as its list (indexed in FhirPath), a single one as itself.
        foreach (var (name, element) in node.EnumerateElements())
        {
            var items = element switch
            {
                Base single => [(single, path + "." + name)],
                IEnumerable<Base> list => list.Select((item, i) => (item, $"{path}.{name}[{i}]")).ToList(),
                _ => new List<(Base, string)>(),
            };
            // Nested sections are sections: Composition.section.section.entry is held to the section.entry rule.
            var childLogical = logicalPath.Length == 0 ? name
                : name == "section" && logicalPath.EndsWith("section", StringComparison.Ordinal) ? logicalPath
                : logicalPath + "." + name;
            foreach (var (value, childPath) in items)
            {
                if (value is Resource) continue; // a contained resource: its references are its own
                if (value is ResourceReference reference) yield return (childPath, childLogical, reference);
                else
                    foreach (var found in References(value, childPath, childLogical)) yield return found;
            }
        }
    }

    private static OperationOutcome.IssueComponent Unresolved(string path, string english, string japanese)
    {
        var issue = new OperationOutcome.IssueComponent
        {
            Severity = OperationOutcome.IssueSeverity.Error,
            Code = OperationOutcome.IssueType.NotFound,
            Expression = [path],
            Diagnostics = english,
            Details = new CodeableConcept { Text = $"{japanese}\n{english}" },
        };
        var rule = new Extension { Url = OutcomeExplainer.RuleExtension };
        rule.AddExtension("kind", new Code(nameof(OutcomeExplainer.RuleKind.Reference)));
        rule.AddExtension("element", new FhirString("Reference.reference"));
        issue.Extension.Add(rule);
        return issue;
    }
}

using System.Text.Json;
using Hl7.Fhir.FhirPath;
using Hl7.Fhir.Model;
using Hl7.FhirPath;
using Hl7.FhirPath.Expressions;

namespace PhrFhir.Server.Subscriptions;

/// <summary>One way a topic fires: on these interactions, when the FHIRPath criteria (over %current and %previous) hold.</summary>
public sealed record TopicTrigger(string Description, string[] Interactions, string? Criteria);

/// <summary>
/// A SubscriptionTopic this server offers, read from <c>topics.json</c> (data, not code: a topic for
/// Tasks, Consents or share links is one entry there). <see cref="Patient"/> is DSUBm's split between
/// patient-dependent topics (a patient filter is required) and multi-patient ones (it is forbidden).
/// </summary>
public sealed record TopicDefinition(string Id, string Url, string Title, string Resource, TopicTrigger[] Triggers, string[] Filters, string Patient, string[]? Include)
{
    /// <summary>The trigger interaction of a write method (backport IG: create | update | delete).</summary>
    public static string Interaction(string method, int version) => method switch
    {
        "DELETE" => "delete",
        _ when version == 1 => "create",
        _ => "update",
    };
}

/// <summary>
/// The topics (R5 SubscriptionTopic semantics), their R4 representation as Basic resources in the
/// backport IG's cross-version shape (Subscriptions R5 Backport 1.1.0, "Topics in R4"), and the
/// evaluation of their triggers.
/// </summary>
public sealed class SubscriptionTopics
{
    const string Ext = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.";
    public const string FhirTypes = "http://hl7.org/fhir/fhir-types";

    static readonly FhirPathCompiler Compiler = new(new SymbolTable().AddStandardFP().AddFhirExtensions());

    public IReadOnlyList<TopicDefinition> All { get; }
    readonly Dictionary<string, CompiledExpression> _criteria = new(StringComparer.Ordinal);

    public SubscriptionTopics()
    {
        using var stream = typeof(SubscriptionTopics).Assembly.GetManifestResourceStream("PhrFhir.Server.Subscriptions.topics.json")
            ?? throw new InvalidOperationException("topics.json is not embedded in the server.");
        using var doc = JsonDocument.Parse(stream);
        All = doc.RootElement.GetProperty("topics").Deserialize<TopicDefinition[]>(new JsonSerializerOptions { PropertyNameCaseInsensitive = true })!;
        // Compiled at start: a topic with a broken expression stops the server instead of never firing.
        foreach (var criteria in All.SelectMany(t => t.Triggers).Select(t => t.Criteria).OfType<string>().Distinct())
            _criteria[criteria] = Compiler.Compile(criteria);
    }

    public TopicDefinition? ByUrl(string? url) => All.FirstOrDefault(t => t.Url == url);

    /// <summary>The resource types some topic watches: their writes go to the outbox.</summary>
    public IEnumerable<string> WatchedTypes => All.Select(t => t.Resource).Distinct();

    /// <summary>
    /// True when a write of <paramref name="current"/> (null for a deletion) after <paramref name="previous"/>
    /// (null for a creation) fires the topic.
    /// </summary>
    public bool Fires(TopicDefinition topic, string interaction, Resource? current, Resource? previous)
    {
        foreach (var trigger in topic.Triggers)
        {
            if (!trigger.Interactions.Contains(interaction)) continue;
            if (trigger.Criteria is null) return true;
            var context = new FhirEvaluationContext();
            context.Environment["current"] = current is null ? [] : [new PocoNode(current, null, null, null)];
            context.Environment["previous"] = previous is null ? [] : [new PocoNode(previous, null, null, null)];
            var focus = current ?? previous!;
            try
            {
                if (_criteria[trigger.Criteria].IsTrue(new PocoNode(focus, null, null, null), context)) return true;
            }
            catch (Exception) { } // an expression that cannot be evaluated on this version does not fire
        }
        return false;
    }

    /// <summary>The topic as an R4 Basic (code SubscriptionTopic, the R5 elements as cross-version extensions).</summary>
    public static Basic ToBasic(TopicDefinition t)
    {
        var basic = new Basic
        {
            Id = t.Id,
            Code = new CodeableConcept(FhirTypes, "SubscriptionTopic"),
            Extension =
            [
                new Extension(Ext + "url", new FhirUri(t.Url)),
                new Extension(Ext + "title", new FhirString(t.Title)),
                new Extension(Ext + "status", new Code("active")),
            ],
        };
        var resource = "http://hl7.org/fhir/StructureDefinition/" + t.Resource;
        foreach (var trigger in t.Triggers)
        {
            var ext = new Extension { Url = Ext + "resourceTrigger" };
            ext.Extension.Add(new Extension("description", new Markdown(trigger.Description)));
            ext.Extension.Add(new Extension("resource", new FhirUri(resource)));
            foreach (var i in trigger.Interactions) ext.Extension.Add(new Extension("supportedInteraction", new Code(i)));
            if (trigger.Criteria is not null) ext.Extension.Add(new Extension("fhirPathCriteria", new FhirString(trigger.Criteria)));
            basic.Extension.Add(ext);
        }
        foreach (var filter in t.Filters)
        {
            var ext = new Extension { Url = Ext + "canFilterBy" };
            ext.Extension.Add(new Extension("resource", new FhirUri(resource)));
            ext.Extension.Add(new Extension("filterParameter", new FhirString(filter)));
            basic.Extension.Add(ext);
        }
        var shape = new Extension { Url = Ext + "notificationShape" };
        shape.Extension.Add(new Extension("resource", new FhirUri(resource)));
        foreach (var include in t.Include ?? []) shape.Extension.Add(new Extension("include", new FhirString(include)));
        basic.Extension.Add(shape);
        return basic;
    }

    /// <summary>
    /// ITI-114 Resource Subscription Topic Search (DSUBm 2:3.114): the topics matching the search's
    /// parameters (`url`, `resource`, `title`, `status`, `derived-or-self`, `_id`, and `code` =
    /// SubscriptionTopic). Any other parameter is refused, as every search here refuses unknown ones.
    /// </summary>
    public IEnumerable<TopicDefinition> Search(IEnumerable<KeyValuePair<string, string>> parameters)
    {
        IEnumerable<TopicDefinition> found = All;
        foreach (var (name, value) in parameters)
        {
            var values = value.Split(',');
            found = name switch
            {
                "url" or "derived-or-self" => found.Where(t => values.Contains(t.Url)).ToList(),
                "resource" => found.Where(t => values.Any(v => v == t.Resource || v == "http://hl7.org/fhir/StructureDefinition/" + t.Resource)).ToList(),
                "title" => found.Where(t => values.Any(v => t.Title.Contains(v, StringComparison.OrdinalIgnoreCase))).ToList(),
                "status" => values.Contains("active") ? found : [],
                "_id" => found.Where(t => values.Contains(t.Id)).ToList(),
                "code" => values.Any(v => v is "SubscriptionTopic" or FhirTypes + "|SubscriptionTopic") ? found : [],
                "_count" or "_format" => found,
                _ => throw Storage.FhirError.BadRequest($"'{name}' is not a search parameter of SubscriptionTopic (ITI-114: url, resource, title, status, derived-or-self). (検索パラメータが不正です)", name),
            };
        }
        return found;
    }
}

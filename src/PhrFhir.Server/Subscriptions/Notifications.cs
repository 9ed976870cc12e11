using System.Globalization;
using Hl7.Fhir.Model;
using PhrFhir.Server.Rest;
using PhrFhir.Storage;

namespace PhrFhir.Server.Subscriptions;

/// <summary>
/// ITI-112 notification Bundles in the backport IG's R4 shape (backport-subscription-notification-r4):
/// a `history` Bundle whose first entry is the SubscriptionStatus (Parameters,
/// backport-subscription-status-r4), then one entry per event focus — with the resource for
/// `full-resource`, with only its URL for `id-only`, none for `empty`.
/// </summary>
public static class Notifications
{
    public static Bundle Build(string subscriptionId, string topicUrl, string status, string type, long eventsSinceStart,
        SubscriptionDefinition definition, string payload, IReadOnlyList<SubscriptionEvent> events)
    {
        var baseUrl = definition.BaseUrl.TrimEnd('/');
        var subscriptionUrl = baseUrl + "/Subscription/" + subscriptionId;
        var parameters = new Parameters { Id = Guid.NewGuid().ToString(), Meta = new Meta { Profile = [SubscriptionRules.Backport + "backport-subscription-status-r4"] } };
        parameters.Add("subscription", new ResourceReference(subscriptionUrl));
        if (payload != "empty") parameters.Add("topic", new Canonical(topicUrl)); // IG: SHOULD NOT be present with empty payloads
        parameters.Add("status", new Code(status));
        parameters.Add("type", new Code(type));
        parameters.Add("events-since-subscription-start", new FhirString(eventsSinceStart.ToString(CultureInfo.InvariantCulture)));
        foreach (var e in events)
        {
            var part = new Parameters.ParameterComponent { Name = "notification-event" };
            part.Part.Add(new Parameters.ParameterComponent { Name = "event-number", Value = new FhirString(e.Number.ToString(CultureInfo.InvariantCulture)) });
            part.Part.Add(new Parameters.ParameterComponent { Name = "timestamp", Value = new Instant(e.Recorded) });
            if (payload != "empty") part.Part.Add(new Parameters.ParameterComponent { Name = "focus", Value = new ResourceReference(baseUrl + "/" + e.Key) });
            parameters.Parameter.Add(part);
        }
        var bundle = new Bundle
        {
            Id = Guid.NewGuid().ToString(),
            Type = Bundle.BundleType.History,
            Timestamp = DateTimeOffset.UtcNow,
            Meta = new Meta { Profile = [SubscriptionRules.Backport + "backport-subscription-notification-r4"] },
        };
        bundle.Entry.Add(new Bundle.EntryComponent
        {
            FullUrl = "urn:uuid:" + parameters.Id,
            Resource = parameters,
            Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.GET, Url = subscriptionUrl + "/$status" },
            Response = new Bundle.ResponseComponent { Status = "200" },
        });
        if (payload == "empty") return bundle;
        foreach (var e in events.DistinctBy(e => (e.Key, e.Version)))
        {
            var entry = new Bundle.EntryComponent
            {
                FullUrl = baseUrl + "/" + e.Key,
                Request = new Bundle.RequestComponent
                {
                    Method = e.Method switch { "DELETE" => Bundle.HTTPVerb.DELETE, "POST" => Bundle.HTTPVerb.POST, _ => Bundle.HTTPVerb.PUT },
                    Url = e.Key,
                },
                Response = new Bundle.ResponseComponent
                {
                    Status = e.Method switch { "DELETE" => "204", _ when e.Version == 1 => "201", _ => "200" },
                    Etag = $"W/\"{e.Version}\"",
                    LastModified = e.Recorded,
                },
            };
            if (payload == "full-resource" && e.Json.Length > 0) entry.Resource = FhirFormat.ParseStored(e.Json);
            bundle.Entry.Add(entry);
        }
        return bundle;
    }
}

using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Hl7.Fhir.Model;
using Microsoft.Extensions.Options;
using PhrFhir.Server.Security;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;

namespace PhrFhir.Server.Subscriptions;

/// <summary>Configuration section `Subscriptions` (docs/subscriptions.md).</summary>
public sealed class SubscriptionOptions
{
    /// <summary>URL prefixes admitted as channel endpoints besides public https (e.g. `http://127.0.0.1:`); env PHRFHIR_SUBSCRIPTION_ENDPOINTS, comma-separated.</summary>
    public List<string> AllowedEndpoints { get; set; } = [];
    /// <summary>The first retry after a failed notification; each further one waits twice as long, up to <see cref="RetryMaxSeconds"/>.</summary>
    public double RetryFirstSeconds { get; set; } = 5;
    public double RetryMaxSeconds { get; set; } = 300;
    /// <summary>After failing this long without a success, a Subscription goes to `error` (its events stay for $events).</summary>
    public double GiveUpHours { get; set; } = 24;
    /// <summary>How often the deliverer looks for work when nothing wakes it (a commit in this process or a NOTIFY wakes it at once).</summary>
    public int PollMilliseconds { get; set; } = 1000;
}

/// <summary>A filter of backport-filter-criteria: one search parameter and its value, matched against each version written.</summary>
public sealed record SubscriptionFilter(string Code, string Type, string Value);

/// <summary>Who subscribed, as their token said (the access rules are applied as them at each event).</summary>
public sealed record Subscriber(string? Role, string? Actor, string? ClientId, string? Patient, string? Scope);

/// <summary>What the deliverer needs of a Subscription (stored as fhir.subscription_state.definition).</summary>
public sealed record SubscriptionDefinition(
    string Endpoint, string[] Headers, string Payload, string ContentType, int HeartbeatSeconds, int TimeoutSeconds, int MaxCount,
    SubscriptionFilter[] Filters, Subscriber Subscriber, string BaseUrl, bool AllowListed);

/// <summary>
/// ITI-110 Resource Subscription: every Subscription written (any path: REST, Bundles) is checked and
/// normalised here, inside its transaction, and its delivery record saved with it
/// (<see cref="WriteTransaction.SaveSubscription"/>). Backport IG 1.1.0: `criteria` is a topic
/// canonical, filters are `backport-filter-criteria`, the channel is a rest-hook.
/// </summary>
public sealed class SubscriptionRules(FhirStore store, SubscriptionTopics topics, IOptions<SubscriptionOptions> options, IHttpContextAccessor http)
{
    public const string Backport = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";
    public const string Profile = Backport + "backport-subscription";
    /// <summary>The deliverer's own writes (status requested → active | error) are recorded with this writer and not re-checked.</summary>
    public const string ServerWriter = "server:subscriptions";

    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public async System.Threading.Tasks.Task CheckAsync(WriteTransaction tx, Resource resource, StoredResource? current, CancellationToken ct)
    {
        if (resource is not Subscription s || tx.Writer == ServerWriter) return;
        var user = http.HttpContext?.User ?? throw Unprocessable("Subscriptions are created through the REST API, by a client with a token.", "Subscription");
        var topic = topics.ByUrl(s.Criteria)
            ?? throw Unprocessable($"Subscription.criteria '{s.Criteria}' is not a SubscriptionTopic of this server: give a topic canonical URL (GET /Basic?code=SubscriptionTopic lists them; R4 query criteria are not supported). (購読トピックが不明です)", "Subscription.criteria");
        // The subscriber must be allowed to search what the topic is about (403 as for a search).
        AccessControl.Demand(user, Interaction.Search, topic.Resource);

        if (s.Channel?.Type != Subscription.SubscriptionChannelType.RestHook)
            throw Unprocessable("Only rest-hook channels are supported (Subscription.channel.type = rest-hook). (rest-hook のみ対応しています)", "Subscription.channel.type");
        if (!Uri.TryCreate(s.Channel.Endpoint, UriKind.Absolute, out var endpoint) || endpoint.Scheme is not ("https" or "http"))
            throw Unprocessable("Subscription.channel.endpoint must be an absolute http(s) URL. (通知先 URL が不正です)", "Subscription.channel.endpoint");
        var allowListed = await CheckEndpointAsync(endpoint, ct);

        var payload = s.Channel.PayloadElement?.GetExtensionValue<Code>(Backport + "backport-payload-content")?.Value ?? "id-only";
        if (payload is not ("empty" or "id-only" or "full-resource"))
            throw Unprocessable($"backport-payload-content '{payload}' is not empty, id-only or full-resource. (ペイロード種別が不正です)", "Subscription.channel.payload.extension");
        // The subscriber is never sent what it may not read: without a read scope on the type, ids only.
        if (payload == "full-resource" && !Allows(user, Interaction.Read, topic.Resource)) payload = "id-only";
        var contentType = s.Channel.Payload ?? "application/fhir+json";
        if (contentType is not ("application/fhir+json" or "application/fhir+xml"))
            throw Unprocessable($"Subscription.channel.payload '{contentType}' is not application/fhir+json or application/fhir+xml.", "Subscription.channel.payload");

        var heartbeat = UnsignedExtension(s.Channel, "backport-heartbeat-period") ?? 0;
        if (heartbeat is > 0 and < 5)
            throw Unprocessable("backport-heartbeat-period is at least 5 seconds. (ハートビート間隔は 5 秒以上です)", "Subscription.channel.extension");
        var timeout = UnsignedExtension(s.Channel, "backport-timeout") ?? 10;
        if (timeout is < 1 or > 120)
            throw Unprocessable("backport-timeout is between 1 and 120 seconds.", "Subscription.channel.extension");
        var maxCount = UnsignedExtension(s.Channel, "backport-max-count") ?? 20;
        if (maxCount is < 1 or > 1000)
            throw Unprocessable("backport-max-count is between 1 and 1000.", "Subscription.channel.extension");

        var filters = Filters(s, topic, store);
        if (http.HttpContext is { } ctx && PersonCompartment.Of(ctx) is { } person) await CheckPersonsOwnAsync(filters, person, ct);
        var status = s.Status switch
        {
            Subscription.SubscriptionStatus.Off => "off",
            Subscription.SubscriptionStatus.Error => throw Unprocessable("Status error is set by the server, not by a client: send requested (or off to end the subscription). (error はサーバーが設定します)", "Subscription.status"),
            _ => "requested", // requested, or active as sent by some clients: the server confirms it with a handshake
        };
        s.Status = status == "off" ? Subscription.SubscriptionStatus.Off : Subscription.SubscriptionStatus.Requested;
        s.Meta ??= new Meta();
        if (!s.Meta.Profile.Contains(Profile)) s.Meta.Profile = [.. s.Meta.Profile, Profile];

        var definition = new SubscriptionDefinition(endpoint.AbsoluteUri, [.. s.Channel.Header.OfType<string>()], payload, contentType, (int)heartbeat, (int)timeout, (int)maxCount, filters,
            new Subscriber(user.FindFirst(AuthorizationServer.RoleClaim)?.Value, user.FindFirst(AuthorizationServer.ActorClaim)?.Value,
                user.FindFirst("client_id")?.Value ?? user.FindFirst("sub")?.Value, user.FindFirst(PersonCompartment.PatientClaim)?.Value, user.FindFirst("scope")?.Value),
            tx.BaseUrl ?? "", allowListed);
        tx.SaveSubscription(s.Id!, topic.Url, status, JsonSerializer.Serialize(definition, Json));
    }

    /// <summary>
    /// The compartment a Subscription belongs to: the person's own Patient when a person subscribes (they
    /// read and change it as any record of theirs; nobody else's token reaches it), kept across versions
    /// (the deliverer's status changes included); none for other subscribers.
    /// </summary>
    public string? PersonOf(Resource resource, StoredResource? current) =>
        resource is not Subscription ? null
        : current is { Deleted: false } ? current.Person
        : http.HttpContext is { } ctx ? PersonCompartment.Of(ctx) : null;

    /// <summary>
    /// A person subscribes to their own records only: every patient a filter names (patient, subject,
    /// patient.identifier) must be theirs (their Patient or one linked to it). Another person's — or a
    /// patient that does not exist — is the same 403, so the answer reveals nothing. Without a patient
    /// filter (topics where it is optional) their compartment is implied: each event is checked as a read
    /// of theirs (SubscriptionDelivery), so nothing of anyone else reaches them.
    /// </summary>
    async System.Threading.Tasks.Task CheckPersonsOwnAsync(SubscriptionFilter[] filters, string person, CancellationToken ct)
    {
        var own = await store.PersonPatientsAsync(person, ct);
        foreach (var f in filters.Where(f => f.Code is "patient" or "subject" or "patient.identifier"))
            foreach (var value in f.Value.Split(','))
            {
                var patient = f.Code == "patient.identifier" ? await PersonCompartment.PatientWithIdentifierAsync(store, value, ct)
                    : value.StartsWith("Patient/", StringComparison.Ordinal) ? value["Patient/".Length..]
                    : value.Contains('/', StringComparison.Ordinal) ? null : value;
                if (patient is null || !own.Contains(patient))
                    throw new FhirError(HttpStatusCode.Forbidden, OperationOutcome.IssueType.Forbidden,
                        $"A person subscribes to their own records only: the filter {f.Code}={value} does not name Patient/{person}. (本人の記録のみ購読できます)", "Subscription.criteria.extension");
            }
    }

    static bool Allows(System.Security.Claims.ClaimsPrincipal user, Interaction interaction, string type)
    {
        try { AccessControl.Demand(user, interaction, type); return true; }
        catch (FhirError) { return false; }
    }

    static long? UnsignedExtension(Subscription.ChannelComponent channel, string name) => channel.GetExtension(Backport + name)?.Value switch
    {
        UnsignedInt u => u.Value,
        PositiveInt p => p.Value,
        Integer i => i.Value,
        null => null,
        _ => throw Unprocessable($"{name} is an unsignedInt or positiveInt.", "Subscription.channel.extension"),
    };

    /// <summary>
    /// backport-filter-criteria ("DocumentReference?patient=Patient/X&amp;type=…", several allowed, all must
    /// hold): the type is the topic's, each parameter one the topic offers (canFilterBy) and of a type
    /// this server matches (token, reference, string, uri; and `patient.identifier`). DSUBm: a
    /// patient-dependent topic needs a patient filter, a multi-patient one must not have one.
    /// </summary>
    static SubscriptionFilter[] Filters(Subscription s, TopicDefinition topic, FhirStore store)
    {
        var filters = new List<SubscriptionFilter>();
        foreach (var ext in s.CriteriaElement?.Extension.Where(e => e.Url == Backport + "backport-filter-criteria") ?? [])
        {
            var text = (ext.Value as FhirString)?.Value ?? "";
            var q = text.IndexOf('?');
            var type = q < 0 ? topic.Resource : text[..q];
            if (type != topic.Resource)
                throw Unprocessable($"backport-filter-criteria '{text}' is about {type}, but the topic is about {topic.Resource}. (フィルタのリソース型がトピックと一致しません)", "Subscription.criteria.extension");
            foreach (var (code, value) in Rest.ResourceWrites.QueryPairs(q < 0 ? text : text[(q + 1)..]))
            {
                if (!topic.Filters.Contains(code))
                    throw Unprocessable($"'{code}' is not a filter of topic {topic.Url} (it offers {string.Join(", ", topic.Filters)}). (このトピックでは使えないフィルタです)", "Subscription.criteria.extension");
                if (code == "patient.identifier")
                {
                    filters.Add(new SubscriptionFilter(code, "identifier", value));
                    continue;
                }
                var param = store.SearchParameters.Find(topic.Resource, code);
                var kind = param?.Type switch
                {
                    SearchParamType.Token => "token",
                    SearchParamType.Reference => "reference",
                    SearchParamType.String => "string",
                    SearchParamType.Uri => "uri",
                    _ => null,
                } ?? throw Unprocessable($"Filtering subscriptions on '{code}' is not supported by this server (token, reference, string and uri parameters are). (このフィルタには対応していません)", "Subscription.criteria.extension");
                filters.Add(new SubscriptionFilter(code, kind, value));
            }
        }
        var patientFilter = filters.Any(f => f.Code is "patient" or "patient.identifier" or "subject");
        if (topic.Patient == "required" && !patientFilter)
            throw Unprocessable($"Topic {topic.Url} is patient-dependent: backport-filter-criteria must name the patient (patient or patient.identifier). (患者の指定が必要です)", "Subscription.criteria.extension");
        if (topic.Patient == "forbidden" && patientFilter)
            throw Unprocessable($"Topic {topic.Url} is multi-patient: use its patient-dependent topic to filter by patient. (このトピックでは患者を指定できません)", "Subscription.criteria.extension");
        return [.. filters];
    }

    /// <summary>
    /// The SSRF rule: a channel endpoint is an https URL whose host resolves only to public addresses,
    /// unless it starts with a prefix of `Subscriptions:AllowedEndpoints` (PHRFHIR_SUBSCRIPTION_ENDPOINTS).
    /// The deliverer holds non-allow-listed endpoints to public addresses again at each connection (DNS may change).
    /// Returns whether the endpoint is allow-listed.
    /// </summary>
    async Task<bool> CheckEndpointAsync(Uri endpoint, CancellationToken ct)
    {
        if (options.Value.AllowedEndpoints.Any(p => p.Length > 0 && endpoint.AbsoluteUri.StartsWith(p, StringComparison.OrdinalIgnoreCase))) return true;
        const string rule = "Subscriptions:AllowedEndpoints";
        if (endpoint.Scheme != "https")
            throw Unprocessable($"Channel endpoints must be https to a public address unless an operator allows their prefix ({rule}): '{endpoint.GetLeftPart(UriPartial.Authority)}' is not https. (通知先は https の公開アドレスに限られます)", "Subscription.channel.endpoint");
        IPAddress[] addresses;
        try { addresses = IPAddress.TryParse(endpoint.IdnHost, out var ip) ? [ip] : await Dns.GetHostAddressesAsync(endpoint.IdnHost, ct); }
        catch (SocketException) { addresses = []; }
        if (addresses.Length == 0)
            throw Unprocessable($"The channel endpoint's host '{endpoint.Host}' does not resolve. (通知先のホスト名を解決できません)", "Subscription.channel.endpoint");
        if (addresses.FirstOrDefault(a => !IsPublic(a)) is { } inner)
            throw Unprocessable($"Channel endpoints must be https to a public address unless an operator allows their prefix ({rule}): '{endpoint.Host}' is a loopback, private, link-local or reserved address ({inner}). (通知先は https の公開アドレスに限られます)", "Subscription.channel.endpoint");
        return false;
    }

    /// <summary>Not loopback, private (RFC 1918, fc00::/7), link-local (169.254/16 — cloud metadata —, fe80::/10), CGNAT, unspecified or multicast.</summary>
    public static bool IsPublic(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
        if (IPAddress.IsLoopback(address) || address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any) || address.Equals(IPAddress.IPv6None)) return false;
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            var b = address.GetAddressBytes();
            return !(b[0] is 0 or 10 or 127 || b[0] >= 224 || (b[0] == 172 && b[1] is >= 16 and <= 31) || (b[0] == 192 && b[1] == 168)
                     || (b[0] == 169 && b[1] == 254) || (b[0] == 100 && b[1] is >= 64 and <= 127));
        }
        var v6 = address.GetAddressBytes();
        return !(address.IsIPv6LinkLocal || address.IsIPv6SiteLocal || address.IsIPv6Multicast || (v6[0] & 0xfe) == 0xfc);
    }

    static FhirError Unprocessable(string message, string expression) =>
        new(HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.Invalid, message, expression);
}

using System.Net;
using System.Net.Sockets;
using System.Security.Claims;
using System.Text.Json;
using Hl7.Fhir.Model;
using Microsoft.Extensions.Options;
using Npgsql;
using PhrFhir.Server.Rest;
using PhrFhir.Server.Security;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Subscriptions;

/// <summary>
/// Delivers notifications after commit, at least once and in event-number order (docs/subscriptions.md):
/// one process at a time (a PostgreSQL session advisory lock: if its process dies the lock goes with its
/// connection and another server takes over), in rounds — number the outbox's committed changes into
/// each matching Subscription's events, handshake requested Subscriptions, send each active one its
/// next events (up to max-count per notification) or a heartbeat. An event counts as delivered only
/// when the endpoint answered 2xx; until then it is sent again after a back-off that doubles up to
/// `Subscriptions:RetryMaxSeconds`, for `Subscriptions:GiveUpHours`, across restarts (the state is in
/// the database, not in memory).
/// </summary>
public sealed class SubscriptionDelivery : BackgroundService
{
    public const string PublicClient = "subscriptions-public";
    public const string AllowedClient = "subscriptions-allowed";

    readonly FhirStore _store;
    readonly SubscriptionStore _subscriptions;
    readonly SubscriptionTopics _topics;
    readonly SubscriptionOptions _options;
    readonly IHttpClientFactory _clients;
    readonly IServiceProvider _services;
    readonly ResourceWrites _writes;
    readonly ILogger _log;
    readonly SemaphoreSlim _wake = new(0);

    public SubscriptionDelivery(FhirStore store, SubscriptionStore subscriptions, SubscriptionTopics topics, IOptions<SubscriptionOptions> options,
        IHttpClientFactory clients, IServiceProvider services, ResourceWrites writes, ILoggerFactory logs)
    {
        (_store, _subscriptions, _topics, _options, _clients, _services, _writes) = (store, subscriptions, topics, options.Value, clients, services, writes);
        _log = logs.CreateLogger("PhrFhir.Subscriptions");
        // Writes of watched types go to the outbox in their transaction while a Subscription to one of the
        // topics is live (WriteTransaction.RecordChanges); a commit that put rows there (here, or NOTIFY from
        // another process: FhirStore.ListenAsync), and any Subscription written, wake the deliverer at once.
        foreach (var type in topics.WatchedTypes) store.Outboxed[type] = [.. topics.All.Where(t => t.Resource == type).Select(t => t.Url)];
        store.Watched.Add("Subscription");
        store.Changed += type => { if (type is "Subscription" or SubscriptionStore.OutboxSignal) Wake(); };
    }

    void Wake() { if (_wake.CurrentCount == 0) _wake.Release(); }

    /// <summary>Registers topics, rules, the store's subscription SQL, the channel's HTTP clients and the deliverer.</summary>
    public static void Add(WebApplicationBuilder builder)
    {
        var section = builder.Configuration.GetSection("Subscriptions");
        builder.Services.Configure<SubscriptionOptions>(section);
        builder.Services.PostConfigure<SubscriptionOptions>(o =>
        {
            // A comma-separated string (the environment variable, or one configuration value) is a list too.
            if (section["AllowedEndpoints"] is { } joined) o.AllowedEndpoints = [.. joined.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)];
            if (Environment.GetEnvironmentVariable("PHRFHIR_SUBSCRIPTION_ENDPOINTS") is { Length: > 0 } env)
                o.AllowedEndpoints.AddRange(env.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries));
        });
        builder.Services.AddSingleton<SubscriptionTopics>();
        builder.Services.AddSingleton<SubscriptionRules>();
        builder.Services.AddSingleton(sp => new SubscriptionStore(sp.GetRequiredService<FhirStore>()));
        AddClients(builder.Services);
        builder.Services.AddSingleton<SubscriptionDelivery>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<SubscriptionDelivery>());
    }

    /// <summary>The HTTP clients of the channel: no redirects; endpoints not allow-listed reach public addresses only, checked at each connection.</summary>
    static void AddClients(IServiceCollection services)
    {
        services.AddHttpClient(AllowedClient).ConfigurePrimaryHttpMessageHandler(() => new SocketsHttpHandler { AllowAutoRedirect = false });
        services.AddHttpClient(PublicClient).ConfigurePrimaryHttpMessageHandler(() => new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            ConnectCallback = async (context, ct) =>
            {
                // The SSRF rule again at connect time: DNS may now answer a private address for the host.
                var addresses = await Dns.GetHostAddressesAsync(context.DnsEndPoint.Host, ct);
                var target = addresses.FirstOrDefault(SubscriptionRules.IsPublic)
                    ?? throw new HttpRequestException($"{context.DnsEndPoint.Host} resolves to no public address (Subscriptions:AllowedEndpoints)");
                if (addresses.Any(a => !SubscriptionRules.IsPublic(a)))
                    throw new HttpRequestException($"{context.DnsEndPoint.Host} resolves to a non-public address (Subscriptions:AllowedEndpoints)");
                var socket = new Socket(target.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    await socket.ConnectAsync(new IPEndPoint(target, context.DnsEndPoint.Port), ct);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        });
    }

    protected override async Task ExecuteAsync(CancellationToken ct)
    {
        NpgsqlConnection? lead = null;
        try
        {
            while (!ct.IsCancellationRequested)
            {
                try
                {
                    if (lead is not { State: System.Data.ConnectionState.Open })
                    {
                        if (lead is not null) await lead.DisposeAsync(); // broken: its session, and so the lock, are gone
                        lead = await _subscriptions.TryLeadAsync(ct);
                        if (lead is null)
                        {
                            await WaitAsync(ct, _options.PollMilliseconds); // another process delivers; take over if it goes away
                            continue;
                        }
                    }
                    // Still the leader? The lock lives as long as this connection's session.
                    await using (var ping = new NpgsqlCommand("select 1", lead)) await ping.ExecuteScalarAsync(ct);
                    // Nothing live and nothing committed to number: nothing can be due until a write wakes it
                    // (the poll is then only a safety net: a NOTIFY lost while the listener reconnected).
                    var busy = await RoundAsync(ct);
                    await WaitAsync(ct, busy ? _options.PollMilliseconds : IdlePollMilliseconds);
                }
                catch (OperationCanceledException) when (ct.IsCancellationRequested) { return; }
                catch (Exception e)
                {
                    if (FhirStore.IsUnavailable(e)) _log.LogWarning("Subscriptions: the database is unreachable; delivery resumes when it is back");
                    else _log.LogError(e, "Subscriptions: delivery round failed; retrying");
                    await Task.Delay(TimeSpan.FromSeconds(1), ct).ContinueWith(_ => { }, TaskScheduler.Default);
                }
            }
        }
        finally
        {
            if (lead is not null)
            {
                // A pooled connection keeps its session: give the lock back before it returns to the pool.
                try { await using var unlock = new NpgsqlCommand("select pg_advisory_unlock_all()", lead); await unlock.ExecuteNonQueryAsync(CancellationToken.None); }
                catch (Exception) { } // a broken session has released it already
                await lead.DisposeAsync();
            }
        }
    }

    const int IdlePollMilliseconds = 30_000;

    async Task WaitAsync(CancellationToken ct, int milliseconds) => await _wake.WaitAsync(TimeSpan.FromMilliseconds(milliseconds), ct);

    /// <summary>
    /// Per requested Subscription (id, live since): the transactions in progress after it became live. It is
    /// handshaken — and so made active — only once they have all ended: a write whose outbox check ran
    /// before the Subscription was committed (so it recorded nothing for it) has then committed or rolled
    /// back, and every write committed after activation was checked with the Subscription live
    /// (Schema/017). In memory: a new leader takes a new, later snapshot, which only waits longer.
    /// </summary>
    readonly Dictionary<string, string> _barriers = [];

    /// <summary>
    /// One round: number what was committed, then serve each Subscription (several at once: a slow endpoint
    /// delays only its own). False when nothing is live and nothing was numbered.
    /// </summary>
    async Task<bool> RoundAsync(CancellationToken ct)
    {
        var live = await _subscriptions.LiveAsync(ct);
        var watching = live.Select(s => (Row: s, Definition: JsonSerializer.Deserialize<SubscriptionDefinition>(s.Definition, SubscriptionRules.Json)!, Topic: _topics.ByUrl(s.Topic))).ToList();
        var numbered = 0;
        for (int n; (n = await _subscriptions.DispatchAsync(200, change => SubscribersOfAsync(change, watching, ct), ct)) > 0;) numbered += n;
        if (live.Count == 0) return numbered > 0;
        live = await _subscriptions.LiveAsync(ct);
        foreach (var gone in _barriers.Keys.Where(k => !live.Any(s => s.Status == "requested" && s.Id == k)).ToList()) _barriers.Remove(gone);
        var ready = new HashSet<string>();
        foreach (var s in live.Where(s => s.Status == "requested"))
        {
            if (!_barriers.TryGetValue(s.Id, out var barrier)) _barriers[s.Id] = barrier = await _subscriptions.SnapshotAsync(ct);
            if (await _subscriptions.EndedAsync(barrier, ct)) ready.Add(s.Id);
        }
        await Parallel.ForEachAsync(live, new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = ct }, async (s, c) =>
        {
            var definition = JsonSerializer.Deserialize<SubscriptionDefinition>(s.Definition, SubscriptionRules.Json)!;
            var now = DateTimeOffset.UtcNow;
            if (s.Status == "requested") { if (ready.Contains(s.Id)) await HandshakeAsync(s, definition, c); }
            else if (s.Status != "active" || s.NextAttempt > now) return;
            else if (s.EventsSinceStart > s.DeliveredThrough) await DeliverAsync(s, definition, c);
            else if (definition.HeartbeatSeconds > 0 && now - (s.LastSent ?? s.Created) >= TimeSpan.FromSeconds(definition.HeartbeatSeconds))
            {
                var heartbeat = Notifications.Build(s.Id, s.Topic, "active", "heartbeat", s.EventsSinceStart, definition, definition.Payload, []);
                if (await SendAsync(s, definition, heartbeat, c) is null) await _subscriptions.SentAsync(s.Id, c);
            }
        });
        return true;
    }

    /// <summary>
    /// The Subscriptions a committed change is an event for: the topic fires for it, the filters match
    /// the version written (the previous one for a deletion), the Subscription was live when the write
    /// checked for listeners (<see cref="OutboxChange.Counted"/>), and the subscriber may read the resource now under the access rules (scopes, role,
    /// Consents) — a subscriber never learns of what it could not read.
    /// </summary>
    async Task<IReadOnlyList<string>> SubscribersOfAsync(OutboxChange change, List<(SubscriptionRow Row, SubscriptionDefinition Definition, TopicDefinition? Topic)> watching, CancellationToken ct)
    {
        var candidates = watching.Where(w => w.Topic?.Resource == change.Type && change.Counted.Contains(w.Row.Id)).ToList();
        if (candidates.Count == 0) return [];
        var current = change.Json.Length > 0 ? FhirFormat.ParseStored(change.Json) : null;
        var previous = change.PreviousJson is { Length: > 0 } p ? FhirFormat.ParseStored(p) : null;
        var interaction = change.Method == "DELETE" ? "delete" : previous is null ? "create" : "update";
        var focus = current ?? previous;
        if (focus is null) return [];
        var rows = _store.Indexer.Extract(focus);
        var (type, id) = (change.Type, change.Key[(change.Type.Length + 1)..]);
        StoredResource? stored = null;
        var ids = new List<string>();
        foreach (var (row, definition, topic) in candidates)
        {
            if (!_topics.Fires(topic!, interaction, current, previous)) continue;
            if (!await MatchesAsync(definition.Filters, rows, type, ct)) continue;
            if (type == "AuditEvent")
            {
                if (!await VisibleAsync(definition.Subscriber, type, async policy => await _store.ReadAuditAsync(id, await policy.FilterAsync(), Audit.BalpAuditEvents.ForPatient, ct) is not null)) continue;
            }
            else
            {
                stored ??= await _store.ReadAsync(type, id, ct);
                if (stored is not { } read || !await VisibleAsync(definition.Subscriber, type, async policy => { await policy.CheckReadAsync(read); return true; })) continue;
            }
            ids.Add(row.Id);
        }
        return ids;
    }

    /// <summary>
    /// The access rules of the subscriber's token (Security/AccessPolicy), applied as if it read the resource
    /// now: its scopes on the type, then <paramref name="reads"/> under its policy (a document's, or an
    /// AuditEvent's in the person's access log).
    /// </summary>
    async Task<bool> VisibleAsync(Subscriber subscriber, string type, Func<AccessPolicy, Task<bool>> reads)
    {
        var claims = new List<System.Security.Claims.Claim>();
        void Add(string type, string? value) { if (value is not null) claims.Add(new System.Security.Claims.Claim(type, value)); }
        Add(AuthorizationServer.RoleClaim, subscriber.Role);
        Add(AuthorizationServer.ActorClaim, subscriber.Actor);
        Add("client_id", subscriber.ClientId);
        Add(PersonCompartment.PatientClaim, subscriber.Patient);
        Add("scope", subscriber.Scope);
        var user = new ClaimsPrincipal(new ClaimsIdentity(claims, "subscription"));
        var ctx = new DefaultHttpContext { RequestServices = _services, User = user };
        try
        {
            AccessControl.Demand(user, Interaction.Read, type);
            return await reads(await AccessPolicy.OfAsync(ctx, _store));
        }
        catch (FhirError) { return false; }
    }

    /// <summary>backport-filter-criteria against the version's own index rows (the search parameters' definitions decide what each selects).</summary>
    async Task<bool> MatchesAsync(SubscriptionFilter[] filters, IndexRows rows, string type, CancellationToken ct)
    {
        foreach (var f in filters)
        {
            // The rows the parameter's search reads: a string parameter's may be stored under other codes (`phonetic` under
            // `name`, a name's family under `family`: SearchParam.RowsOf and PartsIn).
            var keys = _store.SearchParameters.Find(type, f.Code)?.Keys(type) ?? [type + "." + f.Code];
            var values = f.Value.Split(',');
            var ok = f.Type switch
            {
                "token" => rows.Tokens.Any(t => keys.Contains(t.Param) && values.Any(v => TokenMatches(t, v))),
                "reference" => rows.References.Any(r => keys.Contains(r.Param) && values.Any(v => v == r.Target || v == r.TargetId || v.EndsWith("/" + r.Target, StringComparison.Ordinal))),
                "string" => rows.Strings.Any(s => keys.Contains(s.Param) && values.Any(v => s.Norm.StartsWith(JapaneseText.Fold(v), StringComparison.Ordinal))),
                "uri" => rows.Uris.Any(u => keys.Contains(u.Param) && values.Contains(u.Uri)),
                "identifier" => await PatientIdentifierMatchesAsync(rows, type, values, ct),
                _ => false,
            };
            if (!ok) return false;
        }
        return true;
    }

    async Task<bool> PatientIdentifierMatchesAsync(IndexRows rows, string type, string[] identifiers, CancellationToken ct)
    {
        foreach (var identifier in identifiers)
            if (await PersonCompartment.PatientWithIdentifierAsync(_store, identifier, ct) is { } patient
                && rows.References.Any(r => r.Param == type + ".patient" && r.Target == "Patient/" + patient))
                return true;
        return false;
    }

    static bool TokenMatches(TokenRow t, string value)
    {
        var bar = value.IndexOf('|');
        if (bar < 0) return t.Code == value;
        var (system, code) = (value[..bar], value[(bar + 1)..]);
        return (system.Length == 0 ? t.System is null : t.System == system) && (code.Length == 0 || t.Code == code);
    }

    /// <summary>The handshake (backport IG "Handshake"): a 2xx makes the Subscription active, anything else error.</summary>
    async Task HandshakeAsync(SubscriptionRow s, SubscriptionDefinition definition, CancellationToken ct)
    {
        var handshake = Notifications.Build(s.Id, s.Topic, "requested", "handshake", s.EventsSinceStart, definition, definition.Payload, []);
        var failure = await SendAsync(s, definition, handshake, ct);
        await RecordStatusAsync(s.Id, failure is null ? Subscription.SubscriptionStatus.Active : Subscription.SubscriptionStatus.Error,
            failure is null ? null : "handshake failed: " + failure, ct);
    }

    async Task DeliverAsync(SubscriptionRow s, SubscriptionDefinition definition, CancellationToken ct)
    {
        var events = await _subscriptions.EventsAsync(s.Id, s.DeliveredThrough + 1, long.MaxValue, definition.MaxCount, ct);
        if (events.Count == 0) return;
        var notification = Notifications.Build(s.Id, s.Topic, "active", "event-notification", s.EventsSinceStart, definition, definition.Payload, events);
        var failure = await SendAsync(s, definition, notification, ct);
        await NotificationAudit.RecordAsync(_store, s.Id, definition, notification, events, failure, ct); // DSUBm ITI-112, Broker side
        if (failure is null)
        {
            await _subscriptions.DeliveredAsync(s.Id, events[^1].Number, ct);
            return;
        }
        var wait = Math.Min(_options.RetryMaxSeconds, _options.RetryFirstSeconds * Math.Pow(2, Math.Min(s.Attempts, 30)));
        await _subscriptions.FailedAsync(s.Id, DateTimeOffset.UtcNow.AddSeconds(wait), failure, ct);
        if (s.FirstFailure is { } first && DateTimeOffset.UtcNow - first > TimeSpan.FromHours(_options.GiveUpHours))
            await RecordStatusAsync(s.Id, Subscription.SubscriptionStatus.Error, $"no notification delivered for {_options.GiveUpHours} hours: {failure}", ct, from: "active");
    }

    /// <summary>POSTs a notification; null when the endpoint answered 2xx, else why not (never the body: it may name the person).</summary>
    async Task<string?> SendAsync(SubscriptionRow s, SubscriptionDefinition definition, Bundle bundle, CancellationToken ct)
    {
        var format = definition.ContentType == FhirFormat.XmlMime ? WireFormat.Xml : WireFormat.Json;
        using var request = new HttpRequestMessage(HttpMethod.Post, definition.Endpoint) { Content = new ByteArrayContent(FhirFormat.Serialize(bundle, format)) };
        request.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue(FhirFormat.Mime(format)) { CharSet = "utf-8" };
        foreach (var header in definition.Headers)
            if (header.Split(':', 2) is [var name, var value]) request.Headers.TryAddWithoutValidation(name.Trim(), value.Trim());
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(TimeSpan.FromSeconds(definition.TimeoutSeconds));
        try
        {
            using var response = await _clients.CreateClient(definition.AllowListed ? AllowedClient : PublicClient).SendAsync(request, timeout.Token);
            if (response.IsSuccessStatusCode) return null;
            _log.LogInformation("Subscription/{Id}: the endpoint answered {Status}", s.Id, (int)response.StatusCode);
            return $"the endpoint answered {(int)response.StatusCode}";
        }
        catch (Exception e) when (e is HttpRequestException or SocketException || e is OperationCanceledException && !ct.IsCancellationRequested)
        {
            _log.LogInformation("Subscription/{Id}: the endpoint could not be reached ({Error})", s.Id, e.GetType().Name);
            return e is OperationCanceledException ? $"no answer within {definition.TimeoutSeconds} s" : "the endpoint could not be reached";
        }
    }

    /// <summary>
    /// The server's change of a Subscription's status: its resource (a new version, so a client reading
    /// it sees active or error) and its delivery record, in one transaction; nothing when the client
    /// changed the Subscription meanwhile (it is then handshaken again, or off).
    /// </summary>
    async Task RecordStatusAsync(string id, Subscription.SubscriptionStatus status, string? error, CancellationToken ct, string from = "requested")
    {
        await using var tx = await _store.BeginWriteAsync(ct);
        tx.Writer = SubscriptionRules.ServerWriter;
        var current = await tx.ReadAsync("Subscription", id, ct);
        if (current is null || current.Deleted || FhirFormat.ParseStored(current.Json) is not Subscription subscription) return;
        var target = status == Subscription.SubscriptionStatus.Active ? "active" : "error";
        if (subscription.Status?.ToString().ToLowerInvariant() != from) return;
        subscription.Status = status;
        subscription.Error = error;
        tx.SetSubscriptionStatus(id, from, target, error);
        try
        {
            await _writes.UpdateAsync(tx, "Subscription", id, subscription, current.Version, ct);
            await tx.CommitAsync(ct);
        }
        catch (FhirError) { } // changed by its client at the same moment: the next round sees the new version
    }
}

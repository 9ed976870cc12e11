using System.Net;
using System.Numerics;
using System.Security.Cryptography;
using System.Text;
using Hl7.Fhir.Model;
using Npgsql;

namespace PhrFhir.Server.Tests.Subscriptions;

/// <summary>
/// R5-backport Subscriptions on R4 and IHE DSUBm (Subscriptions/, docs/subscriptions.md), each test with
/// its own receiver (<see cref="NotificationReceiver"/>) and its own patients. The fixture's server
/// retries after 0.2 s doubling to 1 s (Subscriptions:RetryFirstSeconds/RetryMaxSeconds) so that an outage
/// of a few seconds stands for one of minutes or hours.
/// </summary>
[Collection("server")]
public sealed class SubscriptionTests(ServerFixture server)
{
    const string Backport = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";
    const string DocumentsOfOnePatient = "https://profiles.ihe.net/ITI/DSUBm/SubscriptionTopic/DSUBm-SubscriptionTopic-DocumentReference-PatientDependent";
    const string SubmissionSetsOfOnePatient = "https://profiles.ihe.net/ITI/DSUBm/SubscriptionTopic/DSUBm-SubscriptionTopic-SubmissionSet-PatientDependent";
    const string Mhd = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/";
    const string Rfc3986 = "urn:ietf:rfc:3986";

    readonly HttpClient _http = server.Http; // the institution that writes the records (and subscribes to what it wrote)

    async Task<string> PatientAsync() => (await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(new Patient
    {
        Identifier = [new Identifier("urn:oid:1.2.392.100495.20.3.51.11312345678", Fhir.Unique("s"))],
        Name = [new HumanName { Family = "購読", Given = ["太郎"] }],
    })), HttpStatusCode.Created)).Id!;

    static Subscription Subscription(string topic, string filter, string endpoint, string payload = "id-only", int? heartbeat = null)
    {
        var s = new Subscription
        {
            Meta = new Meta { Profile = [Backport + "backport-subscription"] },
            Status = Hl7.Fhir.Model.Subscription.SubscriptionStatus.Requested,
            Reason = "test",
            Criteria = topic,
            Channel = new Subscription.ChannelComponent
            {
                Type = Hl7.Fhir.Model.Subscription.SubscriptionChannelType.RestHook,
                Endpoint = endpoint,
                Payload = "application/fhir+json",
            },
        };
        s.CriteriaElement.Extension.Add(new Extension(Backport + "backport-filter-criteria", new FhirString(filter)));
        s.Channel.PayloadElement.Extension.Add(new Extension(Backport + "backport-payload-content", new Code(payload)));
        if (heartbeat is { } h) s.Channel.Extension.Add(new Extension(Backport + "backport-heartbeat-period", new UnsignedInt(h)));
        return s;
    }

    /// <summary>Creates a Subscription and waits for the server's handshake to settle its status.</summary>
    async Task<Subscription> SubscribeAsync(HttpClient client, Subscription s, Hl7.Fhir.Model.Subscription.SubscriptionStatus expected = Hl7.Fhir.Model.Subscription.SubscriptionStatus.Active)
    {
        var created = await Fhir.ExpectAsync<Subscription>(await client.PostAsync("Subscription", Fhir.Json(s)), HttpStatusCode.Created);
        Assert.Equal(Hl7.Fhir.Model.Subscription.SubscriptionStatus.Requested, created.Status);
        Subscription? now = null;
        Assert.True(await NotificationReceiver.WaitAsync(() =>
        {
            now = Fhir.ReadAsync<Subscription>(client.GetAsync("Subscription/" + created.Id).Result).Result;
            return now.Status != Hl7.Fhir.Model.Subscription.SubscriptionStatus.Requested;
        }), "the handshake never settled the status");
        Assert.Equal(expected, now!.Status);
        return now;
    }

    static string NewOid() => "urn:oid:2.25." + new BigInteger(Guid.NewGuid().ToByteArray(), isUnsigned: true);

    /// <summary>An ITI-65 Minimal submission of <paramref name="count"/> text documents for one patient.</summary>
    static Bundle ProvideBundle(string patient, int count, string? duplicateUid = null)
    {
        var setUrl = "urn:uuid:" + Guid.NewGuid();
        var set = new List
        {
            Extension = [new Extension("https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId", new Identifier(Rfc3986, NewOid()))],
            Identifier = [new Identifier(Rfc3986, NewOid()) { Use = Identifier.IdentifierUse.Usual }],
            Status = List.ListStatus.Current,
            Mode = ListMode.Working,
            Title = "購読テスト",
            Code = new CodeableConcept("https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes", "submissionset"),
            Subject = new ResourceReference("Patient/" + patient),
            Date = DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssK", System.Globalization.CultureInfo.InvariantCulture),
        };
        var bundle = new Bundle { Type = Bundle.BundleType.Transaction, Meta = new Meta { Profile = [Mhd + "IHE.MHD.Minimal.ProvideBundle"] } };
        bundle.Entry.Add(new Bundle.EntryComponent { FullUrl = setUrl, Resource = set, Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = "List" } });
        for (var i = 0; i < count; i++)
        {
            var bytes = Encoding.UTF8.GetBytes($"健康診断結果 {i} {Guid.NewGuid()}");
            string docUrl = "urn:uuid:" + Guid.NewGuid(), binaryUrl = "urn:uuid:" + Guid.NewGuid();
            set.Entry.Add(new List.EntryComponent { Item = new ResourceReference(docUrl) });
            bundle.Entry.Add(new Bundle.EntryComponent
            {
                FullUrl = docUrl,
                Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = "DocumentReference" },
                Resource = new DocumentReference
                {
                    MasterIdentifier = new Identifier(Rfc3986, i == count - 1 && duplicateUid is not null ? duplicateUid : NewOid()) { Use = Identifier.IdentifierUse.Usual },
                    Status = DocumentReferenceStatus.Current,
                    Subject = new ResourceReference("Patient/" + patient),
                    Type = new CodeableConcept("http://loinc.org", "53576-5", "健康診断結果報告書"),
                    Content = [new DocumentReference.ContentComponent { Attachment = new Attachment
                    {
                        ContentType = "text/plain", Language = "ja", Url = binaryUrl, SizeUnsignedInt = bytes.Length, Hash = SHA1.HashData(bytes),
                    } }],
                },
            });
            bundle.Entry.Add(new Bundle.EntryComponent
            {
                FullUrl = binaryUrl,
                Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = "Binary" },
                Resource = new Binary { ContentType = "text/plain", Data = bytes },
            });
        }
        return bundle;
    }

    /// <summary>Provides the documents (ITI-65) and answers their DocumentReference references ("DocumentReference/id"), in Bundle order.</summary>
    async Task<List<string>> ProvideAsync(string patient, int count)
    {
        var response = await Fhir.ExpectAsync<Bundle>(await _http.PostAsync("", Fhir.Json(ProvideBundle(patient, count))), HttpStatusCode.OK);
        return response.Entry.Select(e => e.Response.Location).Where(l => l.Contains("/DocumentReference/", StringComparison.Ordinal) || l.StartsWith("DocumentReference/", StringComparison.Ordinal))
            .Select(l => l[l.IndexOf("DocumentReference/", StringComparison.Ordinal)..].Split('/')[..2]).Select(p => string.Join('/', p)).ToList();
    }

    /// <summary>ITI-105: one document, the plain REST way (DocumentReference with its bytes).</summary>
    async Task<string> PublishAsync(HttpClient client, string patient) =>
        "DocumentReference/" + (await Fhir.ExpectAsync<DocumentReference>(await client.PostAsync("DocumentReference", Fhir.Json(new DocumentReference
        {
            Status = DocumentReferenceStatus.Current,
            Subject = new ResourceReference("Patient/" + patient),
            MasterIdentifier = new Identifier(Rfc3986, NewOid()),
            Type = new CodeableConcept("http://loinc.org", "53576-5", "健康診断結果報告書"),
            Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Data = Encoding.UTF8.GetBytes("結果 " + Guid.NewGuid()) } }],
        })), HttpStatusCode.Created)).Id;

    static List<string?> Foci(List<(long Number, string? Focus)> events) => events.Select(e => e.Focus is null ? null : string.Join('/', e.Focus.Split('/')[^2..])).ToList();

    async Task<Parameters> StatusAsync(HttpClient client, string id) =>
        (Parameters)(await Fhir.ExpectAsync<Bundle>(await client.GetAsync($"Subscription/{id}/$status"), HttpStatusCode.OK)).Entry[0].Resource;

    static long EventsSinceStart(Parameters status) => long.Parse(status.GetSingleValue<FhirString>("events-since-subscription-start")!.Value!, System.Globalization.CultureInfo.InvariantCulture);

    [Fact]
    public async System.Threading.Tasks.Task A_handshake_answered_2xx_makes_the_subscription_active_and_one_answered_500_error()
    {
        await using var receiver = await NotificationReceiver.StartAsync();
        var patient = await PatientAsync();
        var active = await SubscribeAsync(_http, Subscription(DocumentsOfOnePatient, $"DocumentReference?patient=Patient/{patient}", receiver.Endpoint + "ok"));
        var handshake = receiver.Of(active.Id).Select(NotificationReceiver.Status).Single();
        Assert.Equal("handshake", NotificationReceiver.Type(handshake));
        Assert.Equal(Bundle.BundleType.History, receiver.Of(active.Id)[0].Type);

        receiver.HandshakeAnswer = 500;
        var failed = await SubscribeAsync(_http, Subscription(DocumentsOfOnePatient, $"DocumentReference?patient=Patient/{patient}", receiver.Endpoint + "bad"),
            Hl7.Fhir.Model.Subscription.SubscriptionStatus.Error);
        Assert.Contains("500", failed.Error);
        // An errored subscription is told nothing more.
        await PublishAsync(_http, patient);
        Assert.False(await NotificationReceiver.WaitAsync(() => receiver.Of(failed.Id).Count > 0, 2));
    }

    [Fact]
    public async System.Threading.Tasks.Task One_submission_of_three_documents_for_X_notifies_X_with_events_1_to_3_and_nothing_of_Y()
    {
        await using var receiver = await NotificationReceiver.StartAsync();
        string x = await PatientAsync(), y = await PatientAsync();
        var sub = await SubscribeAsync(_http, Subscription(DocumentsOfOnePatient, $"DocumentReference?patient=Patient/{x}", receiver.Endpoint + "x", "full-resource"));

        var docsOfX = await ProvideAsync(x, 3);
        await ProvideAsync(y, 1);
        Assert.True(await NotificationReceiver.WaitAsync(() => receiver.Events(sub.Id).Count >= 3), "three events expected");
        await System.Threading.Tasks.Task.Delay(500); // nothing more comes
        var events = receiver.Events(sub.Id);
        Assert.Equal([1L, 2L, 3L], events.Select(e => e.Number));
        Assert.Equal(docsOfX.Order(), Foci(events).Order());
        // full-resource: each focus is in the Bundle with its content, SubscriptionStatus first.
        var last = receiver.Of(sub.Id)[^1];
        Assert.IsType<Parameters>(last.Entry[0].Resource);
        Assert.All(last.Entry.Skip(1), e => Assert.Equal(x, ((DocumentReference)e.Resource).Subject.Reference.Split('/')[^1]));
        Assert.Equal(3, EventsSinceStart(await StatusAsync(_http, sub.Id)));

        // DSUBm ITI-112, audited by the Broker in X's access log: the notifications sent, their documents, the recipient; nothing in Y's.
        var audits = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync($"AuditEvent?subtype=urn:ihe:event-type-code|ITI-112&patient=Patient/{x}"), HttpStatusCode.OK);
        var sent = audits.Entry.Select(e => (AuditEvent)e.Resource).ToList();
        Assert.NotEmpty(sent);
        Assert.All(sent, a => Assert.Equal(AuditEvent.AuditEventOutcome.N0, a.Outcome));
        Assert.Equal(docsOfX.Order(), sent.SelectMany(a => a.Entity).Where(e => e.What?.Reference?.StartsWith("DocumentReference/", StringComparison.Ordinal) == true).Select(e => e.What.Reference).Order());
        Assert.All(sent, a => Assert.Contains(a.Agent, g => g.Type.Coding[0].Code == "110153" && g.Network.Address == new Uri(receiver.Endpoint).GetLeftPart(UriPartial.Authority)));
        var ofY = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync($"AuditEvent?subtype=urn:ihe:event-type-code|ITI-112&patient=Patient/{y}"), HttpStatusCode.OK);
        Assert.Empty(ofY.Entry);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_rolled_back_submission_causes_no_event()
    {
        await using var receiver = await NotificationReceiver.StartAsync();
        var x = await PatientAsync();
        var sub = await SubscribeAsync(_http, Subscription(DocumentsOfOnePatient, $"DocumentReference?patient=Patient/{x}", receiver.Endpoint + "rb"));
        var taken = await ProvideAsync(x, 1);
        var takenUid = (await Fhir.ExpectAsync<DocumentReference>(await _http.GetAsync(taken[0]), HttpStatusCode.OK)).MasterIdentifier.Value;

        // Three documents, the last reusing a uniqueId: XDSDuplicateUniqueIdInRegistry, nothing stored.
        var refused = await _http.PostAsync("", Fhir.Json(ProvideBundle(x, 3, duplicateUid: takenUid)));
        Assert.Equal(HttpStatusCode.Conflict, refused.StatusCode);
        var next = await ProvideAsync(x, 1);

        Assert.True(await NotificationReceiver.WaitAsync(() => receiver.Events(sub.Id).Count >= 2));
        await System.Threading.Tasks.Task.Delay(500);
        Assert.Equal([(1L, taken[0]), (2L, next[0])], receiver.Events(sub.Id).Select(e => (e.Number, Foci([e])[0]!)));
    }

    [Fact]
    public async System.Threading.Tasks.Task Documents_arriving_while_the_receiver_is_down_are_all_delivered_in_order_when_it_returns()
    {
        await using var receiver = await NotificationReceiver.StartAsync();
        var x = await PatientAsync();
        var sub = await SubscribeAsync(_http, Subscription(DocumentsOfOnePatient, $"DocumentReference?patient=Patient/{x}", receiver.Endpoint + "outage"));

        receiver.Answer = 503; // down: every attempt fails (several retries happen meanwhile)
        var docs = new List<string>();
        for (var i = 0; i < 10; i++) docs.Add(await PublishAsync(_http, x));
        await System.Threading.Tasks.Task.Delay(3000);
        Assert.Empty(receiver.Events(sub.Id));
        var during = await StatusAsync(_http, sub.Id);
        Assert.Equal(10, EventsSinceStart(during));
        Assert.Contains("503", during.GetSingleValue<CodeableConcept>("error")?.Text);

        receiver.Answer = 200;
        Assert.True(await NotificationReceiver.WaitAsync(() => receiver.Events(sub.Id).Count >= 10), "all ten after the outage");
        var events = receiver.Events(sub.Id);
        Assert.Equal(Enumerable.Range(1, 10).Select(n => (long)n), events.Select(e => e.Number));
        Assert.Equal(docs, Foci(events));

        // $events agrees with what arrived, and with $status.
        var replay = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Subscription/{sub.Id}/$events?eventsSinceNumber=1&eventsUntilNumber=10"), HttpStatusCode.OK);
        var replayed = ((Parameters)replay.Entry[0].Resource).Parameter.Where(p => p.Name == "notification-event")
            .Select(p => ((ResourceReference)p.Part.First(x => x.Name == "focus").Value).Reference.Split('/')[^2..]).Select(s => string.Join('/', s)).ToList();
        Assert.Equal(docs, replayed);
        Assert.Equal("query-event", NotificationReceiver.Type((Parameters)replay.Entry[0].Resource));
        Assert.Equal(10, EventsSinceStart(await StatusAsync(_http, sub.Id)));
    }

    [Fact]
    public async System.Threading.Tasks.Task Fifty_concurrent_writers_give_events_without_gaps_or_repeats()
    {
        await using var receiver = await NotificationReceiver.StartAsync();
        var x = await PatientAsync();
        var sub = await SubscribeAsync(_http, Subscription(DocumentsOfOnePatient, $"DocumentReference?patient=Patient/{x}", receiver.Endpoint + "fifty"));
        var docs = await System.Threading.Tasks.Task.WhenAll(Enumerable.Range(0, 50).Select(_ => PublishAsync(_http, x)));

        Assert.True(await NotificationReceiver.WaitAsync(() => receiver.Events(sub.Id).Count >= 50, 60), $"got {receiver.Events(sub.Id).Count} of 50");
        await System.Threading.Tasks.Task.Delay(500);
        var events = receiver.Events(sub.Id);
        Assert.Equal(Enumerable.Range(1, 50).Select(n => (long)n), events.Select(e => e.Number));
        Assert.Equal(docs.Order(), Foci(events).Order());
    }

    /// <summary>
    /// The server as a separate OS process on the fixture's database (the fixture's command line, a port of its
    /// own), its connections named <paramref name="name"/> in PostgreSQL; a client for it carrying the fixture
    /// institution's token (the same keys, and the same public address in Host).
    /// </summary>
    async Task<(System.Diagnostics.Process Process, HttpClient Client)> StartServerProcessAsync(string name)
    {
        var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        var start = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = AppContext.BaseDirectory };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "PhrFhir.Server.dll"));
        foreach (var a in server.Arguments) start.ArgumentList.Add(a);
        // No profile compiling in the background (a shared 2-core machine): what it validates compiles on first use.
        foreach (var a in new[] { "--urls", $"http://127.0.0.1:{port}", "--ConnectionStrings:Fhir", server.Postgres.ConnectionString + ";Application Name=" + name, "--Validation:WarmUp", "false" })
            start.ArgumentList.Add(a);
        var process = System.Diagnostics.Process.Start(start)!;
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}/") };
        client.DefaultRequestHeaders.Host = server.BaseUrl.Authority;
        client.DefaultRequestHeaders.Authorization = _http.DefaultRequestHeaders.Authorization;
        foreach (var accept in _http.DefaultRequestHeaders.Accept) client.DefaultRequestHeaders.Accept.Add(accept);
        var until = DateTime.UtcNow.AddMinutes(3);
        while (true)
        {
            Assert.False(process.HasExited, $"the server process {name} exited with {(process.HasExited ? process.ExitCode : 0)}");
            try
            {
                if ((await client.GetAsync("metadata")).IsSuccessStatusCode) return (process, client);
            }
            catch (HttpRequestException) { }
            Assert.True(DateTime.UtcNow < until, $"the server process {name} did not answer /metadata within 3 minutes");
            await System.Threading.Tasks.Task.Delay(250);
        }
    }

    /// <summary>Ends the deliverer's database session (its advisory lock with it) until a process whose connections are named <paramref name="name"/> holds the lock.</summary>
    async System.Threading.Tasks.Task MakeDelivererAsync(string name)
    {
        await using var db = new NpgsqlConnection(server.Postgres.ConnectionString + ";Pooling=false");
        await db.OpenAsync();
        var until = DateTime.UtcNow.AddMinutes(1);
        while (true)
        {
            await using var holder = new NpgsqlCommand(
                "select a.pid, a.application_name from pg_locks l join pg_stat_activity a on a.pid = l.pid where l.locktype = 'advisory' and l.objid = 7262113 and l.granted", db);
            var (pid, application) = (0, "");
            await using (var r = await holder.ExecuteReaderAsync())
                if (await r.ReadAsync()) (pid, application) = (r.GetInt32(0), r.GetString(1));
            if (application == name) return;
            if (pid != 0) await new NpgsqlCommand($"select pg_terminate_backend({pid})", db).ExecuteNonQueryAsync();
            Assert.True(DateTime.UtcNow < until, $"{name} never became the deliverer");
            await System.Threading.Tasks.Task.Delay(300);
        }
    }

    [Fact]
    public async System.Threading.Tasks.Task A_notification_pending_when_its_server_process_is_killed_is_delivered_by_the_server_that_takes_over()
    {
        await using var receiver = await NotificationReceiver.StartAsync();
        var x = await PatientAsync();
        var sub = await SubscribeAsync(_http, Subscription(DocumentsOfOnePatient, $"DocumentReference?patient=Patient/{x}", receiver.Endpoint + "kill9"));
        receiver.Answer = 503; // the receiver is down: the notifications stay pending

        var (killed, client) = await StartServerProcessAsync("phrfhir-killed");
        try
        {
            await MakeDelivererAsync("phrfhir-killed");
            // The second process commits the documents, numbers their events and fails to deliver them…
            var docs = new List<string>();
            for (var i = 0; i < 3; i++) docs.Add(await PublishAsync(client, x));
            Assert.True(await NotificationReceiver.WaitAsync(() => receiver.Refused >= 1), "the killed process should have tried to notify");
            // …and dies without a word: SIGKILL, no shutdown, its sessions (and the deliverer's lock) dropped by PostgreSQL.
            killed.Kill();
            await killed.WaitForExitAsync();
            Assert.Empty(receiver.Events(sub.Id));

            // The fixture's server process (what a restarted one is: the same database, nothing in memory) takes the lock and delivers.
            receiver.Answer = 200;
            Assert.True(await NotificationReceiver.WaitAsync(() => receiver.Events(sub.Id).Select(e => e.Number).Distinct().Count() >= 3, 60), "delivered after the takeover");
            var events = receiver.Events(sub.Id);
            // At least once, in order: each event number with its document, none skipped.
            Assert.Equal([1L, 2L, 3L], events.Select(e => e.Number).Distinct());
            Assert.Equal(docs, Foci(events).Distinct());
            Assert.Equal(3, EventsSinceStart(await StatusAsync(_http, sub.Id)));
        }
        finally
        {
            if (!killed.HasExited)
            {
                killed.Kill();
                await killed.WaitForExitAsync();
            }
            client.Dispose();
        }
    }

    [Fact]
    public async System.Threading.Tasks.Task With_no_live_subscription_a_submission_writes_nothing_to_the_outbox_and_a_subscription_then_created_hears_the_next()
    {
        await using var db = new NpgsqlConnection(server.Postgres.ConnectionString);
        await db.OpenAsync();
        // The tests of this collection run one at a time: subscriptions earlier tests left live are ended here.
        await new NpgsqlCommand("update fhir.subscription_state set status = 'off' where status <> 'off'", db).ExecuteNonQueryAsync();
        async Task<long> OutboxRowsEver() => (long)(await new NpgsqlCommand(
            "select coalesce(pg_sequence_last_value(pg_get_serial_sequence('fhir.subscription_outbox', 'id')), 0)", db).ExecuteScalarAsync())!;

        await using var receiver = await NotificationReceiver.StartAsync();
        var x = await PatientAsync();
        var before = await OutboxRowsEver();
        await ProvideAsync(x, 2); // ITI-65: a SubmissionSet, two DocumentReferences, both watched types
        Assert.Equal(before, await OutboxRowsEver());

        var sub = await SubscribeAsync(_http, Subscription(DocumentsOfOnePatient, $"DocumentReference?patient=Patient/{x}", receiver.Endpoint + "first"));
        var docs = await ProvideAsync(x, 1);
        Assert.True(await NotificationReceiver.WaitAsync(() => receiver.Events(sub.Id).Count >= 1), "the next submission is an event");
        Assert.Equal([(1L, docs[0])], receiver.Events(sub.Id).Select(e => (e.Number, Foci([e])[0]!)));
        Assert.True(await OutboxRowsEver() > before);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_subscription_becomes_active_only_after_the_writes_in_progress_when_it_was_created_have_ended()
    {
        await using var receiver = await NotificationReceiver.StartAsync();
        var x = await PatientAsync();
        // A write in progress (it has a transaction id): its outbox check may have run before the Subscription existed.
        await using var writer = new NpgsqlConnection(server.Postgres.ConnectionString + ";Pooling=false");
        await writer.OpenAsync();
        await using var tx = await writer.BeginTransactionAsync();
        await new NpgsqlCommand("select pg_current_xact_id()", writer, tx).ExecuteNonQueryAsync();

        var created = await Fhir.ExpectAsync<Subscription>(await _http.PostAsync("Subscription",
            Fhir.Json(Subscription(DocumentsOfOnePatient, $"DocumentReference?patient=Patient/{x}", receiver.Endpoint + "barrier"))), HttpStatusCode.Created);
        await System.Threading.Tasks.Task.Delay(2000);
        Assert.Empty(receiver.Of(created.Id)); // no handshake yet
        Assert.Equal(Hl7.Fhir.Model.Subscription.SubscriptionStatus.Requested, (await Fhir.ReadAsync<Subscription>(await _http.GetAsync("Subscription/" + created.Id))).Status);

        await tx.CommitAsync();
        Assert.True(await NotificationReceiver.WaitAsync(() => receiver.Of(created.Id).Count >= 1), "handshaken once the write ended");
        Assert.True(await NotificationReceiver.WaitAsync(() =>
            Fhir.ReadAsync<Subscription>(_http.GetAsync("Subscription/" + created.Id).Result).Result.Status == Hl7.Fhir.Model.Subscription.SubscriptionStatus.Active));
    }

    [Fact]
    public async System.Threading.Tasks.Task Heartbeats_arrive_on_time_and_status_off_stops_everything()
    {
        await using var receiver = await NotificationReceiver.StartAsync();
        var x = await PatientAsync();
        var sub = await SubscribeAsync(_http, Subscription(DocumentsOfOnePatient, $"DocumentReference?patient=Patient/{x}", receiver.Endpoint + "hb", heartbeat: 5));
        int Heartbeats() => receiver.Of(sub.Id).Count(b => NotificationReceiver.Type(NotificationReceiver.Status(b)) == "heartbeat");
        Assert.True(await NotificationReceiver.WaitAsync(() => Heartbeats() >= 2, 14), "two heartbeats within 14 s at a 5 s period");
        var beats = receiver.Received.Where(r => r.Bundle.Entry[0].Resource is Parameters p && NotificationReceiver.Type(p) == "heartbeat"
            && receiver.Of(sub.Id).Contains(r.Bundle)).Select(r => r.At).ToList();
        var gap = (beats[1] - beats[0]).TotalSeconds;
        Assert.InRange(gap, 4, 7.5);

        sub.Status = Hl7.Fhir.Model.Subscription.SubscriptionStatus.Off;
        var off = await Fhir.ExpectAsync<Subscription>(await _http.PutAsync("Subscription/" + sub.Id, Fhir.Json(sub)), HttpStatusCode.OK);
        Assert.Equal(Hl7.Fhir.Model.Subscription.SubscriptionStatus.Off, off.Status);
        var before = receiver.Of(sub.Id).Count;
        await PublishAsync(_http, x);
        await System.Threading.Tasks.Task.Delay(6500);
        Assert.Equal(before, receiver.Of(sub.Id).Count);
        Assert.Equal("off", (await StatusAsync(_http, sub.Id)).GetSingleValue<Code>("status")!.Value);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_subscriber_without_the_persons_consent_learns_nothing()
    {
        await using var receiver = await NotificationReceiver.StartAsync();
        var x = await PatientAsync(); // written by the fixture's institution
        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        var sub = await SubscribeAsync(other, Subscription(DocumentsOfOnePatient, $"DocumentReference?patient=Patient/{x}", receiver.Endpoint + "noconsent", "full-resource"));
        await PublishAsync(_http, x);
        var own = await SubscribeAsync(_http, Subscription(DocumentsOfOnePatient, $"DocumentReference?patient=Patient/{x}", receiver.Endpoint + "writer"));
        await PublishAsync(_http, x);
        Assert.True(await NotificationReceiver.WaitAsync(() => receiver.Events(own.Id).Count >= 1));
        await System.Threading.Tasks.Task.Delay(1000);
        Assert.Empty(receiver.Events(sub.Id));
        Assert.Equal(0, EventsSinceStart(await StatusAsync(other, sub.Id)));
        var replay = await Fhir.ExpectAsync<Bundle>(await other.GetAsync($"Subscription/{sub.Id}/$events"), HttpStatusCode.OK);
        Assert.Single(replay.Entry); // the status alone
    }

    /// <summary>The subscribing person's Patient (registered by the institution, the only one with their identifier) and their client.</summary>
    async Task<(string Patient, HttpClient Person)> SubscribingPersonAsync()
    {
        var register = new HttpRequestMessage(HttpMethod.Post, "Patient")
        {
            Content = Fhir.Json(new Patient { Identifier = [new Identifier("urn:oid:1.2.392.100495.20.3.51.11312345678", ServerFixture.SubscribingPersonIdentifier)], Name = [new HumanName { Family = "購読", Given = ["本人"] }] }),
        };
        register.Headers.TryAddWithoutValidation("If-None-Exist", $"identifier=urn:oid:1.2.392.100495.20.3.51.11312345678|{ServerFixture.SubscribingPersonIdentifier}");
        var me = (await Fhir.ReadAsync<Patient>(await _http.SendAsync(register))).Id!;
        return (me, await server.ClientAsync(ServerFixture.SubscribingPersonClient));
    }

    [Fact]
    public async System.Threading.Tasks.Task A_person_is_notified_when_their_share_link_is_opened_and_not_when_it_is_refused()
    {
        await using var receiver = await NotificationReceiver.StartAsync();
        var (me, person) = await SubscribingPersonAsync();
        using var _ = person;
        var sub = await SubscribeAsync(person, Subscription("http://phrfhir.example/fhir/SubscriptionTopic/share-link-opened", $"AuditEvent?patient=Patient/{me}", receiver.Endpoint + "opened", "full-resource"));
        var document = await PublishAsync(person, me); // ITI-105 by the person's app
        var share = new Parameters();
        share.Parameter.Add(new() { Name = "documentReference", Value = new ResourceReference(document) });
        share.Parameter.Add(new() { Name = "passcode", Value = new FhirString("2468") });
        share.Parameter.Add(new() { Name = "expires", Value = new Instant(DateTimeOffset.UtcNow.AddDays(1)) });
        var issued = await Fhir.ExpectAsync<Parameters>(await person.PostAsync($"Patient/{me}/$share", Fhir.Json(share)), HttpStatusCode.Created);
        var shlink = ((FhirString)issued.GetSingle("shlink").Value).Value;
        var url = System.Text.Json.JsonDocument.Parse(System.Buffers.Text.Base64Url.DecodeFromChars(shlink.AsSpan("shlink:/".Length))).RootElement.GetProperty("url").GetString()!;

        using var recipient = new HttpClient();
        var wrong = await recipient.PostAsync(url, new StringContent("""{"recipient": "Dr. 佐藤", "passcode": "0000"}""", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Unauthorized, wrong.StatusCode); // refused: audited, not an opening
        var opened = await recipient.PostAsync(url, new StringContent("""{"recipient": "Dr. 佐藤", "passcode": "2468"}""", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, opened.StatusCode);

        Assert.True(await NotificationReceiver.WaitAsync(() => receiver.Events(sub.Id).Count >= 1), "the opening is an event");
        await System.Threading.Tasks.Task.Delay(1000);
        var events = receiver.Events(sub.Id);
        Assert.Single(events);
        Assert.StartsWith("AuditEvent/", Foci(events)[0]);
        var audit = (AuditEvent)receiver.Of(sub.Id).Last(b => NotificationReceiver.Type(NotificationReceiver.Status(b)) == "event-notification").Entry[1].Resource;
        Assert.Equal("shl-manifest", audit.Subtype.Single().Code);
        Assert.Contains(audit.Entity, e => e.What?.Reference == "Patient/" + me);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_person_subscribes_to_their_own_records_only_and_hears_only_what_they_may_read()
    {
        await using var receiver = await NotificationReceiver.StartAsync();
        var (me, person) = await SubscribingPersonAsync();
        using var _ = person;
        var other = await PatientAsync();

        // Someone else's records, or a patient that does not exist: the same refusal, revealing nothing.
        foreach (var filter in new[] { $"DocumentReference?patient=Patient/{other}", "DocumentReference?patient=Patient/no-such-patient",
                                       $"DocumentReference?patient.identifier=urn:oid:1.2.392.100495.20.3.51.11312345678|{Fhir.Unique("n")}" })
        {
            var refused = await person.PostAsync("Subscription", Fhir.Json(Subscription(DocumentsOfOnePatient, filter, receiver.Endpoint + "theirs")));
            var outcome = await Fhir.ExpectAsync<OperationOutcome>(refused, HttpStatusCode.Forbidden);
            Assert.Equal("Subscription.criteria.extension", outcome.Issue[0].Expression.Single());
        }

        var documents = await SubscribeAsync(person, Subscription(DocumentsOfOnePatient, $"DocumentReference?patient=Patient/{me}", receiver.Endpoint + "mine", "full-resource"));
        // No patient filter (optional on this topic): their compartment is implied.
        var tasks = await SubscribeAsync(person, Subscription("http://phrfhir.example/fhir/SubscriptionTopic/task-opened", "Task?status=requested", receiver.Endpoint + "tasks"));
        async Task<string> TaskAsync(string patient) => "Task/" + (await Fhir.ExpectAsync<Hl7.Fhir.Model.Task>(await _http.PostAsync("Task", Fhir.Json(new Hl7.Fhir.Model.Task
        {
            Status = Hl7.Fhir.Model.Task.TaskStatus.Requested,
            Intent = Hl7.Fhir.Model.Task.TaskIntent.Order,
            Description = "要精密検査",
            For = new ResourceReference("Patient/" + patient),
        })), HttpStatusCode.Created)).Id;
        await TaskAsync(other);
        var myTask = await TaskAsync(me);
        await PublishAsync(_http, other);
        var myDocument = await PublishAsync(_http, me);

        Assert.True(await NotificationReceiver.WaitAsync(() => receiver.Events(documents.Id).Count >= 1 && receiver.Events(tasks.Id).Count >= 1));
        await System.Threading.Tasks.Task.Delay(1000);
        Assert.Equal([(1L, myDocument)], receiver.Events(documents.Id).Select(e => (e.Number, Foci([e])[0]!)));
        Assert.Equal([(1L, myTask)], receiver.Events(tasks.Id).Select(e => (e.Number, Foci([e])[0]!)));
        var notified = receiver.Of(documents.Id).Last(b => NotificationReceiver.Type(NotificationReceiver.Status(b)) == "event-notification");
        Assert.Equal(myDocument.Split('/')[1], notified.Entry[1].Resource.Id); // full-resource: they may read it

        // The Subscription is theirs: they read its status; the institution whose documents it reports does not see it.
        Assert.Equal(1, EventsSinceStart(await StatusAsync(person, documents.Id)));
        await Fhir.ExpectAsync<OperationOutcome>(await _http.GetAsync($"Subscription/{documents.Id}"), HttpStatusCode.NotFound);
    }

    [Theory]
    [InlineData("https://127.0.0.1/hook", "loopback")]
    [InlineData("https://169.254.169.254/latest/meta-data", "link-local")]
    [InlineData("https://10.1.2.3/hook", "private")]
    [InlineData("http://example.org/hook", "not https")]
    [InlineData("http://127.0.0.2:8080/hook", "not https")]
    public async System.Threading.Tasks.Task An_endpoint_outside_the_public_https_rule_and_the_allow_list_is_refused_with_422_naming_the_rule(string endpoint, string why)
    {
        var x = await PatientAsync();
        var response = await _http.PostAsync("Subscription", Fhir.Json(Subscription(DocumentsOfOnePatient, $"DocumentReference?patient=Patient/{x}", endpoint)));
        var outcome = await Fhir.ExpectAsync<OperationOutcome>(response, HttpStatusCode.UnprocessableEntity);
        Assert.True(outcome.Issue[0].Diagnostics.Contains("Subscriptions:AllowedEndpoints", StringComparison.Ordinal), $"[{why}] {outcome.Issue[0].Diagnostics}");
        Assert.Equal("Subscription.channel.endpoint", outcome.Issue[0].Expression.Single());
    }

    [Theory]
    [InlineData("http://example.org/unknown-topic", "DocumentReference?patient=Patient/1", "Subscription.criteria")]
    [InlineData(DocumentsOfOnePatient, "DocumentReference?type=http://loinc.org|53576-5", "Subscription.criteria.extension")] // patient-dependent without a patient
    [InlineData(DocumentsOfOnePatient, "List?patient=Patient/1", "Subscription.criteria.extension")]
    [InlineData(DocumentsOfOnePatient, "DocumentReference?patient=Patient/1&date=2026", "Subscription.criteria.extension")]
    public async System.Threading.Tasks.Task A_subscription_the_topics_do_not_allow_is_refused_with_422(string topic, string filter, string expression)
    {
        await using var receiver = await NotificationReceiver.StartAsync();
        var response = await _http.PostAsync("Subscription", Fhir.Json(Subscription(topic, filter, receiver.Endpoint + "x")));
        var outcome = await Fhir.ExpectAsync<OperationOutcome>(response, HttpStatusCode.UnprocessableEntity);
        Assert.Equal(expression, outcome.Issue[0].Expression.Single());
        Assert.Empty(receiver.Received);
    }

    [Fact]
    public async System.Threading.Tasks.Task Topic_search_lists_the_DSUBm_and_project_topics_as_R4_Basic()
    {
        var all = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync("Basic?code=SubscriptionTopic"), HttpStatusCode.OK);
        Assert.Contains(all.Entry, e => ((Basic)e.Resource).GetExtensionValue<FhirUri>("http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.url").Value == DocumentsOfOnePatient);
        Assert.Contains(all.Entry, e => e.Resource.Id == "phr-task-completed");
        Assert.Contains(all.Entry, e => e.Resource.Id == "phr-consent-revoked");
        var lists = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync("Basic?code=SubscriptionTopic&resource=http://hl7.org/fhir/StructureDefinition/List"), HttpStatusCode.OK);
        Assert.NotEmpty(lists.Entry);
        Assert.All(lists.Entry, e => Assert.Contains(((Basic)e.Resource).Extension, x => x.Url.EndsWith("resourceTrigger", StringComparison.Ordinal)
            && x.GetExtensionValue<FhirUri>("resource").Value == "http://hl7.org/fhir/StructureDefinition/List"));
        var one = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync("Basic?url=" + Uri.EscapeDataString(SubmissionSetsOfOnePatient)), HttpStatusCode.OK);
        Assert.Equal(1, one.Total);
        await Fhir.ExpectAsync<OperationOutcome>(await _http.GetAsync("Basic?foo=bar"), HttpStatusCode.BadRequest);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_submission_set_subscription_hears_the_submission_and_not_the_documents()
    {
        await using var receiver = await NotificationReceiver.StartAsync();
        var x = await PatientAsync();
        var sub = await SubscribeAsync(_http, Subscription(SubmissionSetsOfOnePatient, $"List?patient=Patient/{x}&code=submissionset", receiver.Endpoint + "set"));
        await ProvideAsync(x, 2);
        Assert.True(await NotificationReceiver.WaitAsync(() => receiver.Events(sub.Id).Count >= 1));
        await System.Threading.Tasks.Task.Delay(500);
        var events = receiver.Events(sub.Id);
        Assert.Single(events);
        Assert.StartsWith("List/", Foci(events)[0]);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_task_completed_topic_fires_once_when_the_task_becomes_completed()
    {
        await using var receiver = await NotificationReceiver.StartAsync();
        var x = await PatientAsync();
        var sub = await SubscribeAsync(_http, Subscription("http://phrfhir.example/fhir/SubscriptionTopic/task-completed", $"Task?patient=Patient/{x}", receiver.Endpoint + "task"));
        var task = await Fhir.ExpectAsync<Hl7.Fhir.Model.Task>(await _http.PostAsync("Task", Fhir.Json(new Hl7.Fhir.Model.Task
        {
            Status = Hl7.Fhir.Model.Task.TaskStatus.Requested,
            Intent = Hl7.Fhir.Model.Task.TaskIntent.Order,
            Description = "要精密検査",
            For = new ResourceReference("Patient/" + x),
        })), HttpStatusCode.Created);
        task.Status = Hl7.Fhir.Model.Task.TaskStatus.InProgress;
        task = await Fhir.ExpectAsync<Hl7.Fhir.Model.Task>(await _http.PutAsync("Task/" + task.Id, Fhir.Json(task)), HttpStatusCode.OK);
        task.Status = Hl7.Fhir.Model.Task.TaskStatus.Completed;
        task = await Fhir.ExpectAsync<Hl7.Fhir.Model.Task>(await _http.PutAsync("Task/" + task.Id, Fhir.Json(task)), HttpStatusCode.OK);
        task.Description = "要精密検査（受診済み）"; // still completed: not a new completion
        await Fhir.ExpectAsync<Hl7.Fhir.Model.Task>(await _http.PutAsync("Task/" + task.Id, Fhir.Json(task)), HttpStatusCode.OK);

        Assert.True(await NotificationReceiver.WaitAsync(() => receiver.Events(sub.Id).Count >= 1));
        await System.Threading.Tasks.Task.Delay(1000);
        Assert.Equal([(1L, "Task/" + task.Id)], receiver.Events(sub.Id).Select(e => (e.Number, Foci([e])[0]!)));
    }

    [Fact]
    public async System.Threading.Tasks.Task The_CapabilityStatement_declares_the_backport_server_the_DSUBm_broker_and_the_topics()
    {
        var cs = await Fhir.ExpectAsync<CapabilityStatement>(await server.Anonymous.GetAsync("metadata"), HttpStatusCode.OK);
        Assert.Contains("http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/backport-subscription-server-r4", cs.Instantiates);
        Assert.Contains("https://profiles.ihe.net/ITI/DSUBm/CapabilityStatement/IHE.DSUBm.ResourceNotificationBroker", cs.Instantiates);
        var subscription = cs.Rest[0].Resource.Single(r => r.Type == "Subscription");
        Assert.Contains(subscription.Extension, e => e.Value is Canonical c && c.Value == DocumentsOfOnePatient);
        Assert.Equal(["events", "status"], subscription.Operation.Select(o => o.Name).Where(n => n != "validate").Order());
    }

    [Fact]
    public async System.Threading.Tasks.Task Status_answers_at_type_level_by_id_and_hides_a_subscription_the_requester_cannot_read()
    {
        await using var receiver = await NotificationReceiver.StartAsync();
        var x = await PatientAsync();
        var sub = await SubscribeAsync(_http, Subscription(DocumentsOfOnePatient, $"DocumentReference?patient=Patient/{x}", receiver.Endpoint + "status"));
        var byQuery = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Subscription/$status?id={sub.Id}"), HttpStatusCode.OK);
        Assert.Equal("active", ((Parameters)byQuery.Entry[0].Resource).GetSingleValue<Code>("status")!.Value);
        var body = new Parameters();
        body.Add("id", new Id(sub.Id));
        var byBody = await Fhir.ExpectAsync<Bundle>(await _http.PostAsync("Subscription/$status", Fhir.Json(body)), HttpStatusCode.OK);
        Assert.Equal("query-status", NotificationReceiver.Type((Parameters)byBody.Entry[0].Resource));
        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        await Fhir.ExpectAsync<OperationOutcome>(await other.GetAsync($"Subscription/{sub.Id}/$status"), HttpStatusCode.NotFound);
        await Fhir.ExpectAsync<OperationOutcome>(await other.GetAsync($"Subscription/{sub.Id}/$events"), HttpStatusCode.NotFound);
    }
}

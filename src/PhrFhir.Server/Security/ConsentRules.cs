using System.Collections.Concurrent;
using System.Text;
using Hl7.Fhir.Model;
using PhrFhir.Server.Rest;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;

namespace PhrFhir.Server.Security;

/// <summary>Who asks, in the terms a Consent's provisions speak (actor, purpose of use).</summary>
public sealed record Requester(
    /// <summary>Local keys of the resources that are the requester: "Practitioner/x", "Organization/y", and Groups holding them.</summary>
    IReadOnlySet<string> ActorKeys,
    /// <summary>The requester's identifier ("system|value"), matched against identifier-only actor references.</summary>
    string? ActorIdentifier,
    /// <summary>v3-ActReason codes (TREAT, BTG…) the request is made for.</summary>
    IReadOnlySet<string> Purposes);

/// <summary>
/// The person's Consents (IHE PCF Basic/Intermediate/Advanced, R4 Consent) turned into one SQL
/// condition on a stored row: "some active Consent of this row's patient permits it for this requester,
/// and none denies it". Conditions about the request (actor, purpose, action, period) are decided here
/// in C#; conditions about the data (class, code, security label, data instance/related/authoredby,
/// dataPeriod) become SQL over the index tables, so searches, totals and includes only ever count what
/// is permitted. Consents are held in memory and dropped the moment any Consent is committed (in this
/// process before the write is answered; in others by PostgreSQL NOTIFY): a revoked Consent stops
/// applying at once, and a request pays no database work for Consents in the steady state. So are the
/// links between the holders' Patients and the person's other Patients, dropped when a link changes.
///
/// Semantics (docs/consent.md): a provision's decision (its type) holds for the data its conditions
/// match; a nested provision is an exception with conditions of its own and overrides its parent for
/// what it matches (deny before permit); across Consents, deny wins; nothing decided → not visible.
/// Unlabelled data counts as Normal (N) confidentiality, as PCF's Advanced option presumes.
/// </summary>
public sealed class ConsentRules : BackgroundService
{
    readonly FhirStore store;

    public ConsentRules(FhirStore store)
    {
        this.store = store;
        store.Watched.Add("Consent");
        store.Watched.Add(FhirStore.PersonLinksChanged);
        store.Changed += type =>
        {
            if (type == "Consent") Invalidate();
            else if (type == FhirStore.PersonLinksChanged) InvalidateLinks();
        };
    }

    /// <summary>Hears other processes' Consent commits for as long as the server runs.</summary>
    protected override System.Threading.Tasks.Task ExecuteAsync(CancellationToken stoppingToken) => store.ListenAsync(stoppingToken);

    const string Confidentiality = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
    const string ActReason = "http://terminology.hl7.org/CodeSystem/v3-ActReason";

    // Parsed Consents by key and version: parsing is the cost, rows are read on every request.
    readonly ConcurrentDictionary<string, (int Version, Consent Consent)> _parsed = new();

    /// <summary>
    /// The SQL condition (alias <paramref name="alias"/>; arguments appended to <paramref name="args"/>)
    /// that is true for rows some of <paramref name="consents"/> lets this requester see. "false" when none applies.
    /// </summary>
    public static string Condition(List<(string Patient, Consent Consent)> consents, Requester who, string alias, List<object> args)
    {
        var permits = new List<string>();
        var denies = new List<string>();
        var now = DateTimeOffset.UtcNow;
        foreach (var (patient, consent) in consents)
        {
            if (consent.Provision is not { } root || !InForce(consent, root, now)) continue;
            var (permit, deny) = Decide(root, who, alias, args, now);
            if (permit == "false" && deny == "false") continue;
            // The person's Consent governs their linked Patients' records too (docs/identity.md): an institution's
            // Patient linked to theirs, a Patient merged into theirs — read from fhir.person_link as the links stand now.
            var own = $"({alias}.person = @{Arg(args, patient)} or {alias}.person in " +
                      $"(select substr(l.patient_key, 9) from fhir.person_link l where l.person_key = @{Arg(args, "Patient/" + patient)}))";
            if (permit != "false") permits.Add($"({own} and {permit})");
            if (deny != "false") denies.Add($"({own} and {deny})");
        }
        if (permits.Count == 0) return "false";
        var sql = "(" + string.Join(" or ", permits) + ")";
        return denies.Count == 0 ? sql : $"({sql} and not ({string.Join(" or ", denies)}))";
    }

    /// <summary>True when some provision of these Consents names an actor by reference (the requester's resources must then be known).</summary>
    public static bool NamesActors(List<(string Patient, Consent Consent)> consents) =>
        consents.Any(c => c.Consent.Provision is { } root && NamesActors(root));

    static bool NamesActors(Consent.provisionComponent p) =>
        p.Actor.Any(a => a.Reference?.Reference is not null) || p.Provision.Any(NamesActors);

    static bool InForce(Consent c, Consent.provisionComponent root, DateTimeOffset now) =>
        c.Status == Consent.ConsentState.Active
        && (c.Scope?.Coding.Count is null or 0 || c.Scope.Coding.Any(x => x.Code == "patient-privacy"))
        && Within(root.Period, now);

    static bool Within(Period? p, DateTimeOffset now) =>
        p is null
        || (p.StartElement?.ToDateTimeOffset(TimeSpan.Zero) is not { } s || s <= now)
           && (p.EndElement is null || EndOf(p.End!) >= now);

    // "2022-12-31" as an end means the whole day.
    static DateTimeOffset EndOf(string end) =>
        DateRange.TryParse(end, out _, out var high) ? high : DateTimeOffset.MaxValue;

    /// <summary>(permit, deny) SQL for one provision and its exceptions; "false" when it cannot apply.</summary>
    static (string Permit, string Deny) Decide(Consent.provisionComponent p, Requester who, string alias, List<object> args, DateTimeOffset now)
    {
        var kidsPermit = new List<string>();
        var kidsDeny = new List<string>();
        foreach (var child in p.Provision)
        {
            var (cp, cd) = Decide(child, who, alias, args, now);
            if (cp != "false") kidsPermit.Add(cp);
            if (cd != "false") kidsDeny.Add(cd);
        }
        var anyKidPermit = kidsPermit.Count == 0 ? "false" : "(" + string.Join(" or ", kidsPermit) + ")";
        var anyKidDeny = kidsDeny.Count == 0 ? "false" : "(" + string.Join(" or ", kidsDeny) + ")";

        var own = AppliesTo(p, who, now) ? DataCondition(p, alias, args) : "false";
        var ownPermit = p.Type == Consent.ConsentProvisionType.Permit ? own : "false";
        var ownDeny = p.Type == Consent.ConsentProvisionType.Deny ? own : "false";

        var permit = Or(anyKidPermit, ownPermit);
        if (permit != "false" && anyKidDeny != "false") permit = $"({permit} and not {anyKidDeny})";
        var deny = ownDeny == "false" ? anyKidDeny
            : Or(anyKidDeny, anyKidPermit == "false" ? ownDeny : $"({ownDeny} and not {anyKidPermit})");
        return (permit, deny);
    }

    static string Or(string a, string b) => a == "false" ? b : b == "false" ? a : $"({a} or {b})";

    /// <summary>The request-side conditions: the provision names this requester, purpose and action, and is in its period.</summary>
    static bool AppliesTo(Consent.provisionComponent p, Requester who, DateTimeOffset now)
    {
        if (!Within(p.Period, now)) return false;
        if (p.Actor.Count > 0 && !p.Actor.Any(a => Names(a.Reference, who))) return false;
        if (p.Purpose.Count > 0 && !p.Purpose.Any(c => c.System is null or ActReason && c.Code is { } code && who.Purposes.Contains(code))) return false;
        // Reading is "access" (and "use"); a provision about collecting or disclosing only does not decide reads.
        if (p.Action.Count > 0 && !p.Action.Any(a => a.Coding.Any(c => c.Code is "access" or "use"))) return false;
        return true;
    }

    static bool Names(ResourceReference? r, Requester who)
    {
        if (r?.Identifier is { Value: { } value } id && who.ActorIdentifier == $"{id.System}|{value}") return true;
        return r?.Reference is { } reference && ReferenceTarget.Local(reference) is { } target
            && who.ActorKeys.Contains(target.Type + "/" + target.Id);
    }

    /// <summary>The data-side conditions of one provision, as SQL on the row (true when it has none).</summary>
    static string DataCondition(Consent.provisionComponent p, string a, List<object> args)
    {
        var all = new List<string>();
        if (p.SecurityLabel.Count > 0)
            all.Add("(" + string.Join(" or ", p.SecurityLabel.Select(l => Labelled(l, a, args))) + ")");
        if (p.Class.Count > 0)
            all.Add($"{a}.resource_type = any(@{Arg(args, p.Class.Select(c => c.Code).Where(c => c is not null).ToArray())})");
        if (p.Code.Count > 0)
        {
            var codes = p.Code.SelectMany(c => c.Coding).Where(c => c.Code is not null).ToList();
            all.Add(codes.Count == 0 ? "false" : "(" + string.Join(" or ", codes.Select(c =>
                $"exists(select 1 from fhir.ix_token t where t.rkey = {a}.id and split_part(t.param, '.', 2) in ('code', 'type', 'category') " +
                $"and t.code = @{Arg(args, c.Code!)}" + (c.System is null ? ")" : $" and t.system = @{Arg(args, c.System)})"))) + ")");
        }
        if (p.Data.Count > 0)
            all.Add("(" + string.Join(" or ", p.Data.Select(d => DataItem(d, a, args))) + ")");
        if (p.DataPeriod is { } period)
        {
            var low = period.Start is { } s && DateRange.TryParse(s, out var l, out _) ? l : DateTimeOffset.MinValue;
            var high = period.End is { } e && DateRange.TryParse(e, out _, out var h) ? h : DateTimeOffset.MaxValue;
            all.Add($"exists(select 1 from fhir.ix_date t where t.rkey = {a}.id and split_part(t.param, '.', 2) in ('date', 'period') " +
                    $"and t.low >= @{Arg(args, low.UtcDateTime)} and t.high <= @{Arg(args, high.UtcDateTime)})");
        }
        return all.Count == 0 ? "true" : "(" + string.Join(" and ", all) + ")";
    }

    static string Labelled(Coding label, string a, List<object> args)
    {
        var has = $"exists(select 1 from fhir.ix_token t where t.rkey = {a}.id and t.param = {a}.resource_type || '._security' " +
                  $"and t.code = @{Arg(args, label.Code ?? "")}" + (label.System is null ? ")" : $" and t.system = @{Arg(args, label.System)})");
        // Data without a confidentiality label is Normal.
        return label.System == Confidentiality && label.Code == "N"
            ? $"({has} or not exists(select 1 from fhir.ix_token t where t.rkey = {a}.id and t.param = {a}.resource_type || '._security' and t.system = @{Arg(args, Confidentiality)}))"
            : has;
    }

    static string DataItem(Consent.provisionDataComponent d, string a, List<object> args)
    {
        if (d.Reference?.Reference is not { } reference || ReferenceTarget.Local(reference) is not { } target) return "false";
        var key = Arg(args, target.Type + "/" + target.Id);
        var referring = $"exists(select 1 from fhir.ix_reference r where r.rkey = {a}.id and r.target = @{key})";
        return d.Meaning switch
        {
            Consent.ConsentDataMeaning.Instance => $"{a}.id = @{key}",
            // R4: the instance and what it refers to; PCF ("data related to an encounter"): what refers to it. Both.
            Consent.ConsentDataMeaning.Related => $"({a}.id = @{key} or {referring} or {a}.id in (select r.target from fhir.ix_reference r where r.rkey = @{key}))",
            Consent.ConsentDataMeaning.Dependents => $"({a}.id = @{key} or {referring})",
            Consent.ConsentDataMeaning.Authoredby =>
                $"exists(select 1 from fhir.ix_reference r where r.rkey = {a}.id and r.target = @{key} " +
                "and split_part(r.param, '.', 2) in ('author', 'performer', 'recorder', 'asserter', 'requester', 'participant'))",
            _ => "false",
        };
    }

    static int Arg(List<object> args, object value)
    {
        args.Add(value);
        return args.Count - 1;
    }

    /// <summary>Up to this many active Consents are held in memory; beyond, each request reads its patient's from the database.</summary>
    public const int CachedConsents = 10_000;

    // Every active Consent, parsed, or null until read again: dropped whenever a Consent is committed
    // (this process at commit, others by NOTIFY — FhirStore.Changed). A read that began before a
    // change never stores its stale result (the generation moved on).
    sealed record Snapshot(List<(string Patient, Consent Consent)>? All)
    {
        public ILookup<string, (string Patient, Consent Consent)>? ByPatient { get; } = All?.ToLookup(c => c.Patient);
    }
    Snapshot? _snapshot;
    long _generation;
    readonly Lock _gate = new();

    // Beside the snapshot, which Consents govern each Patient key: those of every Patient of the same person
    // (fhir.person_link), held for the snapshot's holders only. Dropped with the snapshot and whenever a link
    // changes (FhirStore.PersonLinksChanged, at commit here and by NOTIFY elsewhere), so that a request
    // confined to one patient reads neither Consents nor links from the database in the steady state.
    sealed record Coverage(Snapshot Of, ILookup<string, (string Patient, Consent Consent)> ByKey);
    Coverage? _coverage;
    long _linkGeneration;

    /// <summary>Forgets what it holds (a Consent was written somewhere).</summary>
    public void Invalidate()
    {
        lock (_gate)
        {
            _generation++;
            _snapshot = null;
            _coverage = null;
        }
    }

    /// <summary>Forgets who is the same person as whom (a Patient was linked, unlinked or merged somewhere).</summary>
    public void InvalidateLinks()
    {
        lock (_gate)
        {
            _linkGeneration++;
            _coverage = null;
        }
    }

    /// <summary>True when every active Consent is in memory: then naming a patient saves no database work.</summary>
    public bool HoldsAll => _snapshot?.All is not null;

    /// <summary>The current, undeleted Consents whatever their status (InForce decides), of one patient when given.</summary>
    public async Task<List<(string Patient, Consent Consent)>> ActiveAsync(string? person, CancellationToken ct)
    {
        if (person is null) return await ActiveOfAsync(null, ct);
        // A linked Patient's records are governed by the person's Consents too (Condition): those of every Patient of the person.
        var snapshot = await SnapshotAsync(ct);
        if (snapshot.All is not null) return [.. (await CoverageAsync(snapshot, ct)).ByKey["Patient/" + person]];
        var owners = await store.SamePersonKeysAsync(["Patient/" + person], ct);
        if (owners.Count <= 1) return await ActiveOfAsync(person, ct);
        var all = new List<(string Patient, Consent Consent)>();
        foreach (var owner in owners) all.AddRange(await ActiveOfAsync(owner["Patient/".Length..], ct));
        return all;
    }

    async Task<Coverage> CoverageAsync(Snapshot snapshot, CancellationToken ct)
    {
        var coverage = _coverage;
        if (coverage is not null && ReferenceEquals(coverage.Of, snapshot)) return coverage;
        long generation, links;
        lock (_gate) (generation, links) = (_generation, _linkGeneration);
        var holders = snapshot.ByPatient!.Select(g => "Patient/" + g.Key).ToArray();
        var pairs = holders.Length == 0 ? [] : await store.SamePersonCoverageAsync(holders, ct);
        coverage = new Coverage(snapshot, pairs
            .SelectMany(p => snapshot.ByPatient![p.Holder["Patient/".Length..]].Select(c => (p.Key, Consent: c)))
            .ToLookup(x => x.Key, x => x.Consent));
        lock (_gate)
            if (generation == _generation && links == _linkGeneration && ReferenceEquals(_snapshot, snapshot)) _coverage = coverage;
        return coverage;
    }

    async Task<Snapshot> SnapshotAsync(CancellationToken ct)
    {
        var snapshot = _snapshot;
        if (snapshot is not null) return snapshot;
        long generation;
        lock (_gate) generation = _generation;
        var rows = await store.CurrentOfTypeAsync("Consent", null, CachedConsents + 1, ct);
        snapshot = new Snapshot(rows.Count > CachedConsents ? null : Parse(rows));
        lock (_gate)
            if (generation == _generation) _snapshot = snapshot;
        return snapshot;
    }

    async Task<List<(string Patient, Consent Consent)>> ActiveOfAsync(string? person, CancellationToken ct)
    {
        var snapshot = await SnapshotAsync(ct);
        if (snapshot.All is { } all)
            return person is null ? all : [.. snapshot.ByPatient![person]];

        // Too many to hold: this request's patient's only, or refuse a search across everyone's.
        if (person is null)
            throw FhirError.BadRequest($"More than {CachedConsents} Consents could apply to this request: name the patient (patient=Patient/…) so that only theirs are read. (対象患者を指定してください)");
        return Parse(await store.CurrentOfTypeAsync("Consent", person, CachedConsents + 1, ct));
    }

    List<(string Patient, Consent Consent)> Parse(List<StoredResource> rows)
    {
        var list = new List<(string, Consent)>(rows.Count);
        foreach (var row in rows)
        {
            if (row.Person is null) continue; // a Consent about no one of ours grants nothing
            if (!_parsed.TryGetValue(row.Key, out var known) || known.Version != row.Version)
            {
                if (_parsed.Count > 2 * CachedConsents) _parsed.Clear();
                known = (row.Version, (Consent)FhirFormat.ParseStored(row.Json));
                _parsed[row.Key] = known;
            }
            list.Add((row.Person, known.Consent));
        }
        return list;
    }
}

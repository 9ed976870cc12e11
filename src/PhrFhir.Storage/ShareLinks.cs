using Npgsql;

namespace PhrFhir.Storage;

/// <summary>
/// One SMART Health Link as fhir.share_link keeps it (Schema/012, 018; Server/Sharing). A pre-encrypted link
/// has no <see cref="ContentKey"/>: its files were encrypted at issue (fhir.share_link_file) and the key is
/// only in the shlink payload.
/// </summary>
public sealed record ShareLink(
    string Id, string Patient, string Consent, byte[]? ContentKey, string? PasscodeHash, int? AttemptsLeft, string Flags,
    string? Label, DateTimeOffset? Expires, string[] Documents, DateTimeOffset Created, DateTimeOffset? Revoked, int Opened,
    bool PreEncrypted = false)
{
    /// <summary>Usable now: not revoked, not expired, not locked by wrong passcodes (the Consent is checked beside it).</summary>
    public bool Live(DateTimeOffset now) => Revoked is null && (Expires is null || Expires > now) && AttemptsLeft is null or > 0;
}

/// <summary>A `location` URL handed out by a manifest answer, with its link.</summary>
public sealed record ShareFile(string Token, string Resource, string Recipient, DateTimeOffset Expires, ShareLink Link);

public sealed partial class WriteTransaction
{
    /// <summary>The link row, in the transaction that records its Consent and folder List.</summary>
    public void InsertShareLink(ShareLink link) =>
        Add("insert into fhir.share_link (id, patient, consent, content_key, passcode_hash, attempts_left, flags, label, expires, documents, created, pre_encrypted) " +
            "values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            link.Id, link.Patient, link.Consent, link.ContentKey, link.PasscodeHash, link.AttemptsLeft, link.Flags, link.Label,
            link.Expires?.UtcDateTime, link.Documents, link.Created.UtcDateTime, link.PreEncrypted);

    /// <summary>A pre-encrypted link's files (document id → its JWE), inserted after its link row.</summary>
    public void InsertShareLinkFiles(string link, IReadOnlyList<(string Document, string Jwe)> files) =>
        Add("insert into fhir.share_link_file (link, document, jwe) select $1, d, j from unnest($2::text[], $3::text[]) as f(d, j)",
            link, files.Select(f => f.Document).ToArray(), files.Select(f => f.Jwe).ToArray());

    /// <summary>
    /// More documents for a long-term link (its Consent and folder List are updated in the same transaction);
    /// false when it is not the patient's, revoked or not long-term.
    /// </summary>
    public async Task<bool> AddShareLinkDocumentsAsync(string id, string patient, string[] documents, CancellationToken ct)
    {
        await FlushAsync(ct);
        await using var cmd = new NpgsqlCommand(
            "update fhir.share_link set documents = documents || $3::text[] where id = $1 and patient = $2 and revoked is null and strpos(flags, 'L') > 0", _conn, _tx);
        cmd.Parameters.Add(new() { Value = id });
        cmd.Parameters.Add(new() { Value = patient });
        cmd.Parameters.Add(new() { Value = documents });
        return await cmd.ExecuteNonQueryAsync(ct) == 1;
    }

    /// <summary>Marks a link revoked (its Consent is made inactive in the same transaction); false when there is none to revoke.</summary>
    public async Task<bool> RevokeShareLinkAsync(string id, string patient, CancellationToken ct)
    {
        await FlushAsync(ct);
        await using var cmd = new NpgsqlCommand(
            "update fhir.share_link set revoked = now() where id = $1 and patient = $2 and revoked is null", _conn, _tx);
        cmd.Parameters.Add(new() { Value = id });
        cmd.Parameters.Add(new() { Value = patient });
        if (await cmd.ExecuteNonQueryAsync(ct) != 1) return false;
        // A revoked link's stored ciphertext serves no one any more: it goes with the revocation.
        await using var files = new NpgsqlCommand("delete from fhir.share_link_file where link = $1", _conn, _tx);
        files.Parameters.Add(new() { Value = id });
        await files.ExecuteNonQueryAsync(ct);
        return true;
    }
}

public sealed partial class FhirStore
{
    const string LinkColumns = "l.id, l.patient, l.consent, l.content_key, l.passcode_hash, l.attempts_left, l.flags, l.label, l.expires, l.documents, l.created, l.revoked, l.opened, l.pre_encrypted";

    static ShareLink ReadLink(NpgsqlDataReader r, int at = 0) => new(
        r.GetString(at), r.GetString(at + 1), r.GetString(at + 2), r.IsDBNull(at + 3) ? null : (byte[])r[at + 3],
        r.IsDBNull(at + 4) ? null : r.GetString(at + 4), r.IsDBNull(at + 5) ? null : r.GetInt32(at + 5), r.GetString(at + 6),
        r.IsDBNull(at + 7) ? null : r.GetString(at + 7), r.IsDBNull(at + 8) ? null : r.GetFieldValue<DateTimeOffset>(at + 8),
        r.GetFieldValue<string[]>(at + 9), r.GetFieldValue<DateTimeOffset>(at + 10),
        r.IsDBNull(at + 11) ? null : r.GetFieldValue<DateTimeOffset>(at + 11), r.GetInt32(at + 12), r.GetBoolean(at + 13));

    public async Task<ShareLink?> ShareLinkAsync(string id, CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand($"select {LinkColumns} from fhir.share_link l where l.id = $1");
        cmd.Parameters.Add(new() { Value = id });
        await using var r = await cmd.ExecuteReaderAsync(ct);
        return await r.ReadAsync(ct) ? ReadLink(r) : null;
    }

    /// <summary>A patient's links, newest first (the person's view of what they shared).</summary>
    public async Task<List<ShareLink>> ShareLinksOfAsync(string patient, CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand($"select {LinkColumns} from fhir.share_link l where l.patient = $1 order by l.created desc, l.id");
        cmd.Parameters.Add(new() { Value = patient });
        await using var r = await cmd.ExecuteReaderAsync(ct);
        var links = new List<ShareLink>();
        while (await r.ReadAsync(ct)) links.Add(ReadLink(r));
        return links;
    }

    /// <summary>
    /// A wrong passcode: one attempt fewer, in one statement, so parallel guesses cannot each read the
    /// same count (SHL: the limit holds over the link's lifetime). The attempts left after this one, or
    /// null when none were left (the link is then dead: 404).
    /// </summary>
    public async Task<int?> ShareLinkFailedAttemptAsync(string id, CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand(
            "update fhir.share_link set attempts_left = attempts_left - 1 where id = $1 and attempts_left > 0 and revoked is null returning attempts_left");
        cmd.Parameters.Add(new() { Value = id });
        return await cmd.ExecuteScalarAsync(ct) is int left ? left : null;
    }

    /// <summary>
    /// Counts an answered manifest request. With <paramref name="minInterval"/> (L links) it counts only
    /// when the previous one is at least that long ago, in the same statement: false means "too soon" (429).
    /// </summary>
    public async Task<bool> ShareLinkOpenedAsync(string id, TimeSpan? minInterval, CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand(
            "update fhir.share_link set opened = opened + 1, polled = now() where id = $1 " +
            "and ($2::interval is null or polled is null or polled <= now() - $2::interval) returning 1");
        cmd.Parameters.Add(new() { Value = id });
        cmd.Parameters.Add(new() { Value = minInterval is { } i ? i : DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Interval });
        return await cmd.ExecuteScalarAsync(ct) is not null;
    }

    /// <summary>A pre-encrypted link's stored file for one document (its JWE as encrypted at issue), or null.</summary>
    public async Task<string?> ShareLinkFileAsync(string link, string document, CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand("select jwe from fhir.share_link_file where link = $1 and document = $2");
        cmd.Parameters.Add(new() { Value = link });
        cmd.Parameters.Add(new() { Value = document });
        return await cmd.ExecuteScalarAsync(ct) as string;
    }

    public async Task AddShareFilesAsync(IReadOnlyList<(string Token, string Resource)> files, string link, string recipient, DateTimeOffset expires, CancellationToken ct)
    {
        if (files.Count == 0) return;
        await using var cmd = DataSource.CreateCommand(
            "insert into fhir.share_file (token, link, resource, recipient, expires) select t, $3, r, $4, $5 from unnest($1::text[], $2::text[]) as f(t, r)");
        cmd.Parameters.Add(new() { Value = files.Select(f => f.Token).ToArray() });
        cmd.Parameters.Add(new() { Value = files.Select(f => f.Resource).ToArray() });
        cmd.Parameters.Add(new() { Value = link });
        cmd.Parameters.Add(new() { Value = recipient });
        cmd.Parameters.Add(new() { Value = expires.UtcDateTime });
        await cmd.ExecuteNonQueryAsync(ct);
    }

    public async Task<ShareFile?> ShareFileAsync(string token, CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand(
            $"select f.token, f.resource, f.recipient, f.expires, {LinkColumns} from fhir.share_file f join fhir.share_link l on l.id = f.link where f.token = $1");
        cmd.Parameters.Add(new() { Value = token });
        await using var r = await cmd.ExecuteReaderAsync(ct);
        return await r.ReadAsync(ct)
            ? new ShareFile(r.GetString(0), r.GetString(1), r.GetString(2), r.GetFieldValue<DateTimeOffset>(3), ReadLink(r, 4))
            : null;
    }
}

using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Npgsql;

namespace PhrFhir.Storage;

/// <summary>Where verification found the trail broken, or null when it is intact.</summary>
public sealed record AuditChainBreak(long Position, string AuditEventKey, string Reason);

public sealed record AuditChainReport(long Checked, long PendingSeal, long FromPosition, AuditChainBreak? FirstBreak);

/// <summary>
/// Tamper evidence for the audit table (docs/audit.md, "Threat model"). A key that never enters the
/// database (configuration, or a 0600 key file beside the checkpoint) gives every row an HMAC-SHA256 of
/// all its columns (<see cref="RowMac"/>) and links the rows into a keyed chain; the chain's head is
/// written after every seal to a checkpoint file outside the database, so deleting the newest rows shows
/// too. Someone with SQL access but without the key can neither recompute a MAC nor forge the chain.
/// </summary>
public sealed class AuditChain
{
    readonly byte[] _key;
    readonly string _checkpointFile;
    readonly Lock _fileLock = new();

    public AuditChain(byte[] key, string checkpointFile)
    {
        if (key.Length < 32) throw new ArgumentException("The audit chain key must be at least 32 bytes.", nameof(key));
        _key = key;
        _checkpointFile = checkpointFile;
    }

    public const string KeyFileName = "audit-chain.key";
    public const string CheckpointFileName = "audit-chain.checkpoint";

    /// <summary>
    /// The configured key (base64), or else the key file in <paramref name="directory"/>, created once with
    /// 32 random bytes and owner-only permissions (0600); a key file others may read is refused.
    /// </summary>
    public static AuditChain Open(string? configuredKey, string directory)
    {
        Directory.CreateDirectory(directory);
        var checkpoint = Path.Combine(directory, CheckpointFileName);
        if (!string.IsNullOrWhiteSpace(configuredKey))
            return new AuditChain(Convert.FromBase64String(configuredKey.Trim()), checkpoint);
        var keyFile = Path.Combine(directory, KeyFileName);
        if (!File.Exists(keyFile))
        {
            var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
            if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            try
            {
                using var w = new StreamWriter(new FileStream(keyFile, options));
                w.Write(Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)));
            }
            catch (IOException) when (File.Exists(keyFile)) { } // another process created it first
        }
        if (!OperatingSystem.IsWindows() && (File.GetUnixFileMode(keyFile) & (UnixFileMode.GroupRead | UnixFileMode.OtherRead | UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) != 0)
            throw new InvalidOperationException($"The audit chain key file {keyFile} is readable or writable by others: chmod 600 it.");
        return new AuditChain(Convert.FromBase64String(File.ReadAllText(keyFile).Trim()), checkpoint);
    }

    /// <summary>HMAC of every column of the row (length-prefixed, so no two rows encode alike).</summary>
    public byte[] RowMac(AuditRow r)
    {
        using var ms = new MemoryStream();
        void Text(string? s)
        {
            Span<byte> len = stackalloc byte[4];
            if (s is null) { BinaryPrimitives.WriteInt32BigEndian(len, -1); ms.Write(len); return; }
            var bytes = Encoding.UTF8.GetBytes(s);
            BinaryPrimitives.WriteInt32BigEndian(len, bytes.Length);
            ms.Write(len);
            ms.Write(bytes);
        }
        void Texts(string?[] values)
        {
            Span<byte> len = stackalloc byte[4];
            BinaryPrimitives.WriteInt32BigEndian(len, values.Length);
            ms.Write(len);
            foreach (var v in values) Text(v);
        }
        Text(r.Key);
        Span<byte> when = stackalloc byte[8];
        BinaryPrimitives.WriteInt64BigEndian(when, r.Recorded.ToUnixTimeMilliseconds());
        ms.Write(when);
        Text(r.Person);
        Text(r.TypeSystem);
        Text(r.TypeCode);
        Texts(r.Subtype);
        Text(r.Action);
        Text(r.Outcome);
        Texts(r.Agent);
        Texts(r.AltId);
        Texts(r.Entity);
        Text(r.Json);
        // A search's per-patient parts (Schema/026): covered too, appended only when present, so the rows stored
        // before them keep their MACs.
        if (r.PartPerson is not null)
        {
            Texts(r.PartPerson);
            Texts(r.PartQuery ?? []);
        }
        return HMACSHA256.HashData(_key, ms.ToArray());
    }

    /// <summary>The chain link at <paramref name="position"/>: HMAC(previous link ‖ row MAC ‖ position).</summary>
    public byte[] Link(byte[] previous, byte[] rowMac, long position)
    {
        var data = new byte[previous.Length + rowMac.Length + 8];
        previous.CopyTo(data, 0);
        rowMac.CopyTo(data, previous.Length);
        BinaryPrimitives.WriteInt64BigEndian(data.AsSpan(previous.Length + rowMac.Length), position);
        return HMACSHA256.HashData(_key, data);
    }

    /// <summary>A point of the chain: its position and link (position 0: the empty chain).</summary>
    public sealed record Point(long Position, byte[] Link);

    static readonly Point Start = new(0, new byte[32]);

    /// <summary>The chain head as last sealed, and the point up to which the chain was last verified intact.</summary>
    public sealed record Checkpoint(Point Head, Point Verified);

    /// <summary>
    /// The checkpoint file (outside the database), or the start of the chain when there is none yet. A file
    /// whose MAC does not match was changed by someone without the key: that is a break too.
    /// </summary>
    public Checkpoint ReadCheckpoint()
    {
        lock (_fileLock)
        {
            if (!File.Exists(_checkpointFile)) return new(Start, Start);
            using var doc = JsonDocument.Parse(File.ReadAllText(_checkpointFile));
            var root = doc.RootElement;
            Point P(string name) => new(root.GetProperty(name).GetProperty("pos").GetInt64(), Convert.FromBase64String(root.GetProperty(name).GetProperty("link").GetString()!));
            var checkpoint = new Checkpoint(P("head"), P("verified"));
            if (!CryptographicOperations.FixedTimeEquals(CheckpointMac(checkpoint), Convert.FromBase64String(root.GetProperty("mac").GetString()!)))
                throw new InvalidDataException($"The audit checkpoint file {_checkpointFile} does not carry a valid MAC: it was changed without the key.");
            return checkpoint;
        }
    }

    /// <summary>Moves the head and/or the verified point forward (never back), atomically (write, then rename).</summary>
    public void WriteCheckpoint(Point? head = null, Point? verified = null)
    {
        lock (_fileLock)
        {
            var current = ReadCheckpoint();
            var next = new Checkpoint(
                head is not null && head.Position >= current.Head.Position ? head : current.Head,
                verified is not null && verified.Position >= current.Verified.Position ? verified : current.Verified);
            if (next == current) return;
            object J(Point p) => new { pos = p.Position, link = Convert.ToBase64String(p.Link) };
            var json = JsonSerializer.Serialize(new { head = J(next.Head), verified = J(next.Verified), mac = Convert.ToBase64String(CheckpointMac(next)) });
            var temp = _checkpointFile + ".tmp";
            File.WriteAllText(temp, json);
            File.Move(temp, _checkpointFile, overwrite: true);
        }
    }

    byte[] CheckpointMac(Checkpoint c) =>
        HMACSHA256.HashData(_key, Encoding.UTF8.GetBytes($"head:{c.Head.Position}:{Convert.ToBase64String(c.Head.Link)};verified:{c.Verified.Position}:{Convert.ToBase64String(c.Verified.Link)}"));
}

public sealed partial class FhirStore
{
    /// <summary>The advisory lock the sealer holds (one sealer at a time across processes).</summary>
    public const long SealLock = 7262020;

    /// <summary>The key and checkpoint of the audit table's chain (set when the store opens).</summary>
    public AuditChain AuditChain => _auditChain ?? throw new InvalidOperationException("The store was opened without an audit chain key.");
    AuditChain? _auditChain;

    /// <summary>
    /// Links the audit rows awaiting their seal onto the end of the chain, then writes the new head to the
    /// checkpoint file. The audit rows themselves are never updated (Schema/020): the sealer takes their seqs off
    /// fhir.audit_seal_queue (filled by a trigger on every insert) and appends one narrow row per link to
    /// fhir.audit_chain_link, in one statement. One sealer at a time (an advisory lock), so several server
    /// processes may run it.
    /// </summary>
    public async Task<int> SealAuditChainAsync(CancellationToken ct)
    {
        var chain = AuditChain;
        await using var conn = await DataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        await using (var l = new NpgsqlCommand($"select pg_try_advisory_xact_lock({SealLock})", conn, tx))
            if (await l.ExecuteScalarAsync(ct) is not true) return 0;

        // The head and the next rows in one round trip. A queued row whose audit row is gone (removed before it
        // was sealed: the threat model's "last second") leaves the queue unlinked.
        await using var batch = new NpgsqlBatch(conn, tx)
        {
            BatchCommands =
            {
                new("select chain_pos, chain_mac from fhir.audit_chain_link order by chain_pos desc limit 1"),
                new("with q as (delete from fhir.audit_seal_queue where ctid = any(array(select ctid from fhir.audit_seal_queue limit 1000)) returning seq) " +
                    "select q.seq, a.row_mac from q join fhir.audit_event a on a.seq = q.seq order by q.seq"),
            },
        };
        long pos = 0;
        byte[] previous = new byte[32];
        var pending = new List<(long Seq, byte[] RowMac)>();
        await using (var r = await batch.ExecuteReaderAsync(ct))
        {
            if (await r.ReadAsync(ct)) { pos = r.GetInt64(0); previous = r.GetFieldValue<byte[]>(1); }
            await r.NextResultAsync(ct);
            while (await r.ReadAsync(ct)) pending.Add((r.GetInt64(0), r.GetFieldValue<byte[]>(1)));
        }
        if (pending.Count == 0)
        {
            await tx.CommitAsync(ct); // queue entries of removed rows, if any, are gone
            return 0;
        }

        var positions = new long[pending.Count];
        var links = new byte[pending.Count][];
        for (var i = 0; i < pending.Count; i++)
        {
            previous = chain.Link(previous, pending[i].RowMac, ++pos);
            positions[i] = pos;
            links[i] = previous;
        }
        await using (var insert = new NpgsqlCommand(
            "insert into fhir.audit_chain_link (chain_pos, seq, chain_mac) select * from unnest($1::bigint[], $2::bigint[], $3::bytea[])", conn, tx))
        {
            insert.Parameters.Add(new() { Value = positions });
            insert.Parameters.Add(new() { Value = pending.Select(p => p.Seq).ToArray() });
            insert.Parameters.Add(new() { Value = links });
            await insert.ExecuteNonQueryAsync(ct);
        }
        await tx.CommitAsync(ct);
        // After the commit: the file is never ahead of what the database holds, unless rows were removed.
        chain.WriteCheckpoint(head: new AuditChain.Point(pos, previous));
        return pending.Count;
    }

    const string AuditColumns = "a.id, a.recorded, a.person, a.type_system, a.type_code, a.subtype, a.action, a.outcome, a.agent, a.altid, a.entity, a.json, a.row_mac, a.part_person, a.part_query";

    /// <summary>The row read from <see cref="AuditColumns"/> starting at column <paramref name="at"/>, with its stored MAC.</summary>
    static (AuditRow Row, byte[] RowMac) AuditRowAt(NpgsqlDataReader r, int at)
    {
        var key = r.GetString(at);
        var row = new AuditRow(key["AuditEvent/".Length..], r.GetFieldValue<DateTimeOffset>(at + 1), Text(r, at + 2), Text(r, at + 3), Text(r, at + 4),
            r.GetFieldValue<string[]>(at + 5), Text(r, at + 6), Text(r, at + 7), r.GetFieldValue<string[]>(at + 8), r.GetFieldValue<string[]>(at + 9),
            r.GetFieldValue<string[]>(at + 10), r.GetString(at + 11),
            r.IsDBNull(at + 13) ? null : r.GetFieldValue<string[]>(at + 13), r.IsDBNull(at + 14) ? null : r.GetFieldValue<string?[]>(at + 14));
        return (row, r.GetFieldValue<byte[]>(at + 12));
    }

    const string MacMismatch = "the AuditEvent's columns no longer match its MAC (changed, or written without the key)";

    /// <summary>
    /// Verifies the trail: every row's MAC against its columns, every link of the chain and the row it links,
    /// the positions without gaps, and the chain reaching the head the checkpoint file recorded; then the rows
    /// awaiting their seal. Incremental by default: from the last verified point (itself checked against its
    /// row), recording the new one when intact; <paramref name="full"/> rechecks every row from the start and
    /// also looks for rows that are neither in the chain nor awaiting their seal (slipped in past the queue).
    /// </summary>
    public async Task<AuditChainReport> VerifyAuditChainAsync(bool full, CancellationToken ct)
    {
        var chain = AuditChain;
        AuditChain.Checkpoint checkpoint;
        try { checkpoint = chain.ReadCheckpoint(); }
        catch (InvalidDataException e) { return new(0, 0, 0, new(0, "", e.Message)); }
        var from = full ? new AuditChain.Point(0, new byte[32]) : checkpoint.Verified;

        // One snapshot for the chain and the rows outside it: a seal in between cannot make a row look lost.
        await using var conn = await DataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(System.Data.IsolationLevel.RepeatableRead, ct);
        var previous = from.Link;
        long checkedRows = 0, pending = 0, expected = from.Position + 1, last = from.Position;
        var anchorSeen = from.Position == 0;
        AuditChainReport Broken(long pos, string key, string reason) => new(checkedRows, pending, from.Position, new(pos, key, reason));

        await using (var links = new NpgsqlCommand(
            $"select c.chain_pos, c.chain_mac, {AuditColumns} from fhir.audit_chain_link c left join fhir.audit_event a on a.seq = c.seq " +
            "where c.chain_pos >= $1 order by c.chain_pos", conn, tx))
        {
            links.Parameters.Add(new() { Value = Math.Max(from.Position, 1) });
            await using var r = await links.ExecuteReaderAsync(ct);
            while (await r.ReadAsync(ct))
            {
                var pos = r.GetInt64(0);
                var link = r.GetFieldValue<byte[]>(1);
                if (r.IsDBNull(2)) return Broken(pos, "", $"the AuditEvent linked at chain position {pos} is missing (removed)");
                var (row, rowMac) = AuditRowAt(r, 2);
                if (!CryptographicOperations.FixedTimeEquals(chain.RowMac(row), rowMac)) return Broken(pos, row.Key, MacMismatch);
                if (pos == from.Position && from.Position > 0)
                {
                    // The verified point itself: still the row it was (its link unchanged).
                    if (!CryptographicOperations.FixedTimeEquals(link, from.Link))
                        return Broken(pos, row.Key, "the last verified chain position no longer holds the row it held");
                    anchorSeen = true;
                    continue;
                }
                if (!anchorSeen) return Broken(from.Position, row.Key, $"chain position {from.Position}, verified before, is missing");
                if (pos != expected) return Broken(pos, row.Key, $"chain position {expected} is missing");
                previous = chain.Link(previous, rowMac, pos);
                if (!CryptographicOperations.FixedTimeEquals(previous, link))
                    return Broken(pos, row.Key, "the chain link does not follow from the previous row");
                // The head the checkpoint file recorded must still be this very link (not rows sealed anew after a removal).
                if (pos == checkpoint.Head.Position && !CryptographicOperations.FixedTimeEquals(previous, checkpoint.Head.Link))
                    return Broken(pos, row.Key, "the chain no longer passes through the head recorded when it was last sealed: AuditEvents were removed and others sealed in their place");
                last = pos;
                expected++;
                checkedRows++;
            }
        }
        if (!anchorSeen) return Broken(from.Position, "", $"chain position {from.Position}, verified before, is missing");
        if (last < checkpoint.Head.Position)
            return Broken(last + 1, "", $"the chain ends at position {last} but reached position {checkpoint.Head.Position} when last sealed: the newest AuditEvents were removed");

        // The rows not in the chain: those awaiting their seal (the queue), and in a full check every row without a
        // link (an anti-join over the whole table), which must then be one of them.
        await using (var outside = new NpgsqlCommand(full
            ? $"select {AuditColumns}, exists(select 1 from fhir.audit_seal_queue q where q.seq = a.seq) from fhir.audit_event a " +
              "where not exists(select 1 from fhir.audit_chain_link c where c.seq = a.seq)"
            : $"select {AuditColumns}, true from fhir.audit_seal_queue q join fhir.audit_event a on a.seq = q.seq", conn, tx))
        await using (var r = await outside.ExecuteReaderAsync(ct))
            while (await r.ReadAsync(ct))
            {
                var (row, rowMac) = AuditRowAt(r, 0);
                if (!CryptographicOperations.FixedTimeEquals(chain.RowMac(row), rowMac)) return Broken(0, row.Key, MacMismatch);
                if (!r.GetBoolean(15)) return Broken(0, row.Key, "the AuditEvent is neither in the chain nor awaiting its seal (inserted past the queue, or its place in the queue removed)");
                pending++;
            }
        // A full check also finds every search part missing from its patient's log (Schema/026): the part itself is
        // covered by its row's MAC, but its entry in the narrow index is what lists it there, and without it the
        // patient's `GET AuditEvent` would silently miss the event.
        if (full)
            await using (var parts = new NpgsqlCommand(
                "select a.id, i from fhir.audit_event a, generate_subscripts(a.part_person, 1) i where a.part_person is not null " +
                "and not exists(select 1 from fhir.audit_event_part p where p.seq = a.seq and p.part = i and p.person = a.part_person[i]) " +
                "order by a.seq, i limit 1", conn, tx))
            await using (var r = await parts.ExecuteReaderAsync(ct))
                if (await r.ReadAsync(ct))
                    return Broken(0, $"{r.GetString(0)}.{r.GetInt32(1)}", "the search's AuditEvent about this patient is missing from their access log (its entry in fhir.audit_event_part was removed or changed)");
        await tx.CommitAsync(ct);
        chain.WriteCheckpoint(verified: new AuditChain.Point(last, previous));
        return new(checkedRows, pending, from.Position, null);
    }

    static string? Text(NpgsqlDataReader r, int i) => r.IsDBNull(i) ? null : r.GetString(i);
}

using Npgsql;

namespace PhrFhir.Storage;

/// <summary>The person's Patient/$link attempts (Schema/019_link_attempts.sql; Server/Identity/PatientLinks).</summary>
public sealed partial class FhirStore
{
    /// <summary>
    /// Lets one more $link attempt of the person through, or answers how long until one is allowed: at most
    /// <paramref name="limit"/> attempts not known to have succeeded within <paramref name="window"/>. Under a
    /// per-person transaction lock, so concurrent attempts (on any server instance) are counted one after another.
    /// </summary>
    public async Task<(long? Attempt, TimeSpan RetryAfter)> ReserveLinkAttemptAsync(string personKey, int limit, TimeSpan window, CancellationToken ct)
    {
        await using var conn = await DataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        await using (var batch = new NpgsqlBatch(conn, tx))
        {
            Statement(batch, "select pg_advisory_xact_lock(hashtextextended('link-attempt:' || $1, 0))", personKey);
            Statement(batch, "delete from fhir.link_attempt where person_key = $1 and attempted <= now() - $2::interval", personKey, window); // expired
            Statement(batch, "select count(*), coalesce(extract(epoch from min(attempted) + $2::interval - now()), 0)::float8 from fhir.link_attempt where person_key = $1 and attempted > now() - $2::interval",
                personKey, window);
            await using var reader = await batch.ExecuteReaderAsync(ct);
            await reader.NextResultAsync(ct); // past the lock; the delete returns no result set
            await reader.ReadAsync(ct);
            var (count, wait) = (reader.GetInt64(0), reader.GetDouble(1));
            if (count >= limit) return (null, TimeSpan.FromSeconds(Math.Max(1, Math.Ceiling(wait))));
        }
        await using var insert = new NpgsqlCommand("insert into fhir.link_attempt (person_key) values ($1) returning id", conn, tx);
        insert.Parameters.Add(new NpgsqlParameter { Value = personKey });
        var id = (long)(await insert.ExecuteScalarAsync(ct))!;
        await tx.CommitAsync(ct);
        return (id, TimeSpan.Zero);
    }

    /// <summary>A successful attempt does not count against the person.</summary>
    public async Task ReleaseLinkAttemptAsync(long attempt, CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand("delete from fhir.link_attempt where id = $1");
        cmd.Parameters.Add(new NpgsqlParameter { Value = attempt });
        await cmd.ExecuteNonQueryAsync(ct);
    }
}

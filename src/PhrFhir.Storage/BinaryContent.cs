using System.Buffers;
using System.Data;
using System.Security.Cryptography;
using Npgsql;

namespace PhrFhir.Storage;

/// <summary>What is known of a stored Binary's bytes without reading them.</summary>
public sealed record BinaryInfo(string ContentType, long Size, byte[] Sha1, int ChunkSize);

public sealed partial class FhirStore
{
    public const int BinaryChunkSize = 1024 * 1024;

    public async Task<BinaryInfo?> ReadBinaryInfoAsync(string id, int version, CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand();
        return await ReadBinaryInfoAsync(cmd, id, version, ct);
    }

    internal static async Task<BinaryInfo?> ReadBinaryInfoAsync(NpgsqlCommand cmd, string id, int version, CancellationToken ct)
    {
        cmd.CommandText = "select content_type, size, sha1, chunk_size from fhir.binary_content where rkey = $1 and version = $2";
        cmd.Parameters.Add(new() { Value = ResourceDocument.Key("Binary", id) });
        cmd.Parameters.Add(new() { Value = version });
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        if (!await reader.ReadAsync(ct)) return null;
        return new BinaryInfo(reader.GetString(0), reader.GetInt64(1), reader.GetFieldValue<byte[]>(2), reader.GetInt32(3));
    }

    /// <summary>
    /// Copies bytes [from, toInclusive] of a Binary version to <paramref name="target"/>, one chunk row
    /// at a time (SequentialAccess: Npgsql does not buffer a row), so memory stays at one chunk.
    /// </summary>
    public async Task CopyBinaryAsync(string id, int version, BinaryInfo info, long from, long toInclusive, Stream target, CancellationToken ct)
    {
        var first = (int)(from / info.ChunkSize);
        var last = (int)(toInclusive / info.ChunkSize);
        await using var cmd = DataSource.CreateCommand(
            "select chunk, data from fhir.binary_chunk where rkey = $1 and version = $2 and chunk between $3 and $4 order by chunk");
        cmd.Parameters.Add(new() { Value = ResourceDocument.Key("Binary", id) });
        cmd.Parameters.Add(new() { Value = version });
        cmd.Parameters.Add(new() { Value = first });
        cmd.Parameters.Add(new() { Value = last });
        await using var reader = await cmd.ExecuteReaderAsync(CommandBehavior.SequentialAccess, ct);
        var buffer = new byte[81920];
        while (await reader.ReadAsync(ct))
        {
            var chunk = reader.GetInt32(0);
            var chunkStart = (long)chunk * info.ChunkSize;
            await using var data = await reader.GetStreamAsync(1, ct);
            long position = chunkStart;
            int n;
            while ((n = await data.ReadAsync(buffer, ct)) > 0)
            {
                var segStart = Math.Max(from, position);
                var segEnd = Math.Min(toInclusive + 1, position + n);
                if (segEnd > segStart)
                    await target.WriteAsync(buffer.AsMemory((int)(segStart - position), (int)(segEnd - segStart)), ct);
                position += n;
            }
        }
    }
}

public sealed partial class WriteTransaction
{
    readonly Dictionary<string, BinaryInfo> _binariesWritten = new(StringComparer.Ordinal);

    /// <summary>
    /// The size and SHA-1 of the bytes this transaction wrote for Binary <paramref name="id"/> (its latest version here), as
    /// <see cref="WriteBinaryAsync"/> computed them; null when it wrote none or deleted it after. An ITI-65 checks its document's attachment
    /// against them without a flush and two reads (issue #12).
    /// </summary>
    public BinaryInfo? BinaryWritten(string id) => _binariesWritten.GetValueOrDefault(ResourceDocument.Key("Binary", id));

    /// <summary>What is known of a Binary version's bytes, inside this transaction (its own writes included).</summary>
    public async Task<BinaryInfo?> ReadBinaryInfoAsync(string id, int version, CancellationToken ct)
    {
        await FlushAsync(ct); // a small Binary's rows may still be queued (WriteBinaryAsync)
        await using var cmd = new NpgsqlCommand(null, _conn, _tx);
        return await FhirStore.ReadBinaryInfoAsync(cmd, id, version, ct);
    }

    /// <summary>
    /// Streams a Binary version's bytes into 1 MB chunk rows on this transaction, hashing as it goes.
    /// Refuses (FhirError 413) past <paramref name="maxBytes"/>; the rows vanish with the rollback.
    /// </summary>
    public async Task<BinaryInfo> WriteBinaryAsync(string id, int version, string? person, string contentType, Stream source, long maxBytes, CancellationToken ct)
    {
        var key = ResourceDocument.Key("Binary", id);
        using var sha1 = IncrementalHash.CreateHash(HashAlgorithmName.SHA1);
        const int ChunkSize = FhirStore.BinaryChunkSize;
        // Pooled: a new 1 MB array per Binary is a large-object allocation per ITI-65, and those bring full collections.
        var buffer = ArrayPool<byte>.Shared.Rent(ChunkSize);
        long size = 0;
        try
        {
            for (var chunk = 0; ; chunk++)
            {
                var filled = 0;
                int n;
                while (filled < ChunkSize && (n = await source.ReadAsync(buffer.AsMemory(filled, ChunkSize - filled), ct)) > 0) filled += n;
                if (filled == 0 && chunk > 0) break;
                size += filled;
                if (size > maxBytes)
                    throw new FhirError(System.Net.HttpStatusCode.RequestEntityTooLarge, Hl7.Fhir.Model.OperationOutcome.IssueType.TooCostly,
                        $"The Binary exceeds {maxBytes / 1024 / 1024} MB. (バイナリが大きすぎます)");
                sha1.AppendData(buffer, 0, filled);
                const string InsertChunk = "insert into fhir.binary_chunk (rkey, version, chunk, data) values ($1, $2, $3, $4)";
                if (chunk == 0 && filled < ChunkSize)
                {
                    // All the bytes in one chunk (an ITI-65's document, typically): its rows wait for the transaction's next
                    // flush, with the versions, instead of two round trips of their own (issue #12).
                    Add(InsertChunk, key, version, 0, buffer.AsSpan(0, filled).ToArray());
                    break;
                }
                await using (var cmd = new NpgsqlCommand(InsertChunk, _conn, _tx))
                {
                    cmd.Parameters.Add(new() { Value = key });
                    cmd.Parameters.Add(new() { Value = version });
                    cmd.Parameters.Add(new() { Value = chunk });
                    cmd.Parameters.Add(new() { Value = new ReadOnlyMemory<byte>(buffer, 0, filled) });
                    await cmd.ExecuteNonQueryAsync(ct);
                }
                if (filled < ChunkSize) break;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        var info = new BinaryInfo(contentType, size, sha1.GetHashAndReset(), FhirStore.BinaryChunkSize);
        _binariesWritten[key] = info;
        Add("insert into fhir.binary_content (rkey, version, person, content_type, size, sha1, chunk_size) values ($1, $2, $3, $4, $5, $6, $7)",
            key, version, person, contentType, size, info.Sha1, info.ChunkSize);
        return info;
    }
}

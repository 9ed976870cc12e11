using System.Text;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;

namespace PhrFhir.Validation.Cache;

/// <summary>Where one resource sits in a pack file, with the fields a resolver looks it up by.</summary>
internal sealed record PackEntry(string ResourceType, string Id, string? Url, string? Version, string? Package, long Offset, int Length, bool Xml);

/// <summary>A resource to be written into a pack: what it is, which package it came from, its bytes.</summary>
internal sealed record PackItem(string ResourceType, string Id, string? Url, string? Version, string? Package, bool Xml, byte[] Bytes);

/// <summary>
/// A conformance set on disk, made to be opened fast: one file holding a JSON index followed by
/// each resource's serialized bytes. Opening reads only the index; a resource is read (and parsed
/// by its resolver) the first time the validator asks for it.
/// </summary>
/// <remarks>Layout: "PHRPACK1", int32 index length, UTF-8 JSON index, then the resource blobs
/// (offsets are relative to the end of the index).</remarks>
internal sealed class ConformancePack : IDisposable
{
    private static readonly byte[] Magic = "PHRPACK1"u8.ToArray();

    private sealed record Header(string Key, List<PackEntry> Entries);

    private readonly SafeFileHandle _file;
    private readonly long _dataStart;

    private ConformancePack(string path, SafeFileHandle file, long dataStart, Header header)
    {
        Path = path;
        _file = file;
        _dataStart = dataStart;
        Key = header.Key;
        Entries = header.Entries;
    }

    public string Path { get; }

    /// <summary>The cache key this pack was built for (package versions and content hashes).</summary>
    public string Key { get; }

    public IReadOnlyList<PackEntry> Entries { get; }

    /// <summary>Opens a pack if it exists and was built for <paramref name="expectedKey"/>; otherwise null.</summary>
    public static ConformancePack? TryOpen(string path, string expectedKey)
    {
        if (!File.Exists(path)) return null;
        SafeFileHandle? handle = null;
        try
        {
            handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
            var prefix = new byte[12];
            if (RandomAccess.Read(handle, prefix, 0) != 12 || !prefix.AsSpan(0, 8).SequenceEqual(Magic)) { handle.Dispose(); return null; }
            var indexLength = BitConverter.ToInt32(prefix, 8);
            var index = new byte[indexLength];
            if (RandomAccess.Read(handle, index, 12) != indexLength) { handle.Dispose(); return null; }
            var header = JsonSerializer.Deserialize<Header>(index);
            if (header is null || header.Key != expectedKey) { handle.Dispose(); return null; }
            return new ConformancePack(path, handle, 12 + indexLength, header);
        }
        catch (Exception ex) when (ex is IOException or JsonException or UnauthorizedAccessException)
        {
            handle?.Dispose();
            return null;
        }
    }

    /// <summary>Reads one resource's bytes. Thread-safe (positional reads).</summary>
    public byte[] Read(PackEntry entry)
    {
        var buffer = new byte[entry.Length];
        var read = 0;
        while (read < buffer.Length)
        {
            var n = RandomAccess.Read(_file, buffer.AsSpan(read), _dataStart + entry.Offset + read);
            if (n == 0) throw new IOException($"Conformance cache {Path} is truncated.");
            read += n;
        }
        return buffer;
    }

    /// <summary>
    /// Writes a pack next to its final place and renames it in, so a concurrent reader (another
    /// test process, a second server) sees either no pack or a complete one.
    /// </summary>
    public static void Write(string path, string key, IEnumerable<PackItem> resources)
    {
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(path)!);
        var entries = new List<PackEntry>();
        var blobs = new List<byte[]>();
        long offset = 0;
        foreach (var r in resources)
        {
            entries.Add(new PackEntry(r.ResourceType, r.Id, r.Url, r.Version, r.Package, offset, r.Bytes.Length, r.Xml));
            blobs.Add(r.Bytes);
            offset += r.Bytes.Length;
        }
        var index = JsonSerializer.SerializeToUtf8Bytes(new Header(key, entries));
        var temp = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        using (var fs = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
        {
            fs.Write(Magic);
            fs.Write(BitConverter.GetBytes(index.Length));
            fs.Write(index);
            foreach (var b in blobs) fs.Write(b);
        }
        File.Move(temp, path, overwrite: true);
    }

    public void Dispose() => _file.Dispose();

    /// <summary>A short, file-name-safe digest of the parts of a cache key.</summary>
    public static string KeyOf(params IEnumerable<string> parts)
    {
        var text = string.Join("\n", parts);
        return Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..32].ToLowerInvariant();
    }
}

using System.Net;
using System.Text;
using System.Text.Json;
using System.Xml;
using Hl7.Fhir.Model;
using Task = System.Threading.Tasks.Task;
using Hl7.Fhir.Rest;
using Hl7.Fhir.Serialization;
using PhrFhir.Storage;

namespace PhrFhir.Server.Rest;

public enum WireFormat { Json, Xml }

/// <summary>
/// FHIR's two wire formats: which one a request speaks (Content-Type) and wants (_format, Accept),
/// bounded parsing into POCOs, and serialisation honouring _summary/_elements.
/// </summary>
public static class FhirFormat
{
    public const string JsonMime = "application/fhir+json";
    public const string XmlMime = "application/fhir+xml";

    static readonly FhirJsonDeserializer JsonParser = new(new DeserializerSettings());
    static readonly FhirXmlDeserializer XmlParser = new(new DeserializerSettings());
    static readonly FhirJsonSerializer JsonWriter = new();
    static readonly FhirXmlSerializer XmlWriter = new();

    /// <summary>The format to answer in: _format wins over Accept (R4 http.html#mime-type); JSON by default.</summary>
    public static WireFormat Negotiate(HttpRequest request)
    {
        var f = request.Query["_format"].ToString();
        if (f.Length > 0)
            return Parse(f) ?? throw new FhirError(HttpStatusCode.NotAcceptable, OperationOutcome.IssueType.NotSupported,
                $"_format '{f}' is not supported: use json or xml. (_format は json か xml を指定してください)", "_format");
        var accept = request.Headers.Accept.ToString();
        if (accept.Length == 0) return WireFormat.Json;
        foreach (var part in accept.Split(','))
        {
            var mime = part.Split(';')[0].Trim();
            if (mime is "*/*" or "application/*" or "") return WireFormat.Json;
            if (Parse(mime) is { } w) return w;
        }
        throw new FhirError(HttpStatusCode.NotAcceptable, OperationOutcome.IssueType.NotSupported,
            $"None of the accepted types '{accept}' is served: use {JsonMime} or {XmlMime}.");
    }

    static WireFormat? Parse(string f) => f.Trim().ToLowerInvariant() switch
    {
        "json" or JsonMime or "application/json" or "application/json+fhir" or "text/json" => WireFormat.Json,
        "xml" or XmlMime or "application/xml" or "application/xml+fhir" or "text/xml" => WireFormat.Xml,
        _ => null,
    };

    public static string Mime(WireFormat f) => f == WireFormat.Json ? JsonMime : XmlMime;

    /// <summary>Reads the body as one resource, bounded in size and depth; any fault is a 400 OperationOutcome.</summary>
    public static async Task<Resource> ReadResourceAsync(HttpRequest request, ServerLimits limits, CancellationToken ct)
    {
        var contentType = request.ContentType?.Split(';')[0].Trim() ?? "";
        var format = Parse(contentType) ?? throw new FhirError(HttpStatusCode.UnsupportedMediaType, OperationOutcome.IssueType.NotSupported,
            $"Content-Type '{request.ContentType}' is not a FHIR format: send {JsonMime} or {XmlMime}. (Content-Type が不正です)");
        if (request.ContentLength > limits.MaxBodyBytes) throw TooLarge(limits);
        using var buffer = new MemoryStream();
        var chunk = new byte[81920];
        int n;
        while ((n = await request.Body.ReadAsync(chunk, ct)) > 0)
        {
            buffer.Write(chunk, 0, n);
            if (buffer.Length > limits.MaxBodyBytes) throw TooLarge(limits);
        }
        if (buffer.Length == 0) throw FhirError.BadRequest("The request body is empty: a FHIR resource is expected. (本文が空です)");
        return ParseResource(buffer.GetBuffer().AsSpan(0, (int)buffer.Length), format, limits);
    }

    static FhirError TooLarge(ServerLimits limits) => new(HttpStatusCode.RequestEntityTooLarge, OperationOutcome.IssueType.TooCostly,
        $"The request body exceeds {limits.MaxBodyBytes / 1024 / 1024} MB. (本文が大きすぎます)");

    /// <summary>
    /// Parses a body into a resource: nesting bounded by Limits:MaxDepth in either format (JSON objects and
    /// arrays, XML elements), and no control character in any string (<see cref="ControlCharacters"/>).
    /// </summary>
    public static Resource ParseResource(ReadOnlySpan<byte> body, WireFormat format, ServerLimits limits)
    {
        var resource = Deserialize(body, format, limits);
        // Only a body whose bytes may hold one is walked: a create stays one vectorised scan of its bytes.
        if (ControlCharacters.MayBeIn(body)) ControlCharacters.RefuseIn(resource);
        return resource;
    }

    static Resource Deserialize(ReadOnlySpan<byte> body, WireFormat format, ServerLimits limits)
    {
        try
        {
            if (format == WireFormat.Json)
            {
                var reader = new Utf8JsonReader(body, new JsonReaderOptions { MaxDepth = limits.MaxDepth });
                return JsonParser.DeserializeResource(ref reader);
            }
            var settings = new XmlReaderSettings
            {
                DtdProcessing = DtdProcessing.Prohibit, // no entities, no XXE
                XmlResolver = null,
                MaxCharactersInDocument = limits.MaxBodyBytes,
                // Control characters (raw or as &#27;) are found by ControlCharacters with the element's path.
                CheckCharacters = false,
            };
            var bytes = body.ToArray();
            // XmlReader has no depth bound and the SDK's parser recurses: measure before parsing.
            using (var probe = XmlReader.Create(new MemoryStream(bytes), settings))
                while (probe.Read())
                    if (probe.Depth >= limits.MaxDepth)
                        throw FhirError.BadRequest($"The XML nests deeper than {limits.MaxDepth} levels (Limits:MaxDepth). (入れ子が深すぎます)");
            using var xml = XmlReader.Create(new MemoryStream(bytes), settings);
            return XmlParser.DeserializeResource(xml);
        }
        catch (DeserializationFailedException e)
        {
            // Bounded: a broken 1000-entry Bundle is described by its first problems, not a 1 MB answer.
            const int maxIssues = 50;
            var issues = e.Exceptions.Take(maxIssues).Select(x => new OperationOutcome.IssueComponent
            {
                Severity = OperationOutcome.IssueSeverity.Error,
                Code = OperationOutcome.IssueType.Structure,
                Diagnostics = x.Message,
                Expression = x is Hl7.Fhir.Utility.ExtendedCodedException { InstancePath: { } path } ? [path] : null!,
            }).ToList();
            throw new FhirError(HttpStatusCode.BadRequest, OperationOutcome.IssueType.Structure,
                $"The {(format == WireFormat.Json ? "JSON" : "XML")} is not a valid FHIR resource ({e.Exceptions.Count} problem(s){(e.Exceptions.Count > maxIssues ? $", the first {maxIssues} listed" : "")}); nothing was stored. (FHIR リソースとして不正です)",
                cause: e)
            { MoreIssues = issues };
        }
        catch (JsonException e)
        {
            throw FhirError.BadRequest($"Malformed JSON: {e.Message} (JSON の構文エラー)");
        }
        catch (XmlException e)
        {
            throw FhirError.BadRequest($"Malformed XML: {e.Message} (XML の構文エラー)");
        }
        catch (Exception e) when (e is FormatException or ArgumentException or InvalidOperationException or NotSupportedException)
        {
            throw FhirError.BadRequest($"The body could not be read as FHIR: {e.Message}");
        }
    }

    /// <summary>
    /// How deep stored JSON may nest, for reading it back and for writing it. Above any accepted body: XML
    /// within <see cref="ServerLimits.MaxDepth"/> (at most <see cref="ServerLimits.MaxDepthCeiling"/>) is
    /// up to about twice as deep once stored as JSON, and the reader's default (64) made such resources
    /// unreadable in every later XML read, history and search.
    /// </summary>
    const int StoredMaxDepth = 1000;

    public static Resource ParseStored(string json)
    {
        var reader = new Utf8JsonReader(Encoding.UTF8.GetBytes(json), new JsonReaderOptions { MaxDepth = StoredMaxDepth });
        return JsonParser.DeserializeResource(ref reader);
    }

    // Japanese stays as UTF-8 text (山田), not \u5C71\u7530: readable to integrators and a third the size.
    // FHIR JSON is never embedded in HTML by this server, so HTML-sensitive characters need no escaping.
    static readonly JsonWriterOptions WriterOptions = new()
    {
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        MaxDepth = StoredMaxDepth,
    };

    public static string ToJson(Resource r) => Encoding.UTF8.GetString(Serialize(r, WireFormat.Json));

    public static byte[] Serialize(Base r, WireFormat f, SummaryType summary = SummaryType.False, string[]? elements = null)
    {
        if (f == WireFormat.Xml) return Encoding.UTF8.GetBytes(XmlWriter.SerializeToString(r, summary, elements));
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(4096);
        using (var writer = new Utf8JsonWriter(buffer, WriterOptions))
            JsonWriter.Serialize(r, writer, summary, elements);
        return buffer.WrittenSpan.ToArray();
    }
}

/// <summary>Bounds on what one request may send (configurable under "Limits").</summary>
public sealed class ServerLimits
{
    public long MaxBodyBytes { get; set; } = 20 * 1024 * 1024;
    /// <summary>Bytes of one Binary (a document) uploaded raw; streamed, never held whole in memory.</summary>
    public long MaxBinaryBytes { get; set; } = 100 * 1024 * 1024;
    /// <summary>
    /// How deep a body may nest, in JSON (objects and arrays) and XML (elements) alike; checked while
    /// parsing, before the SDK's recursive parser sees it.
    /// </summary>
    public int MaxDepth { get; set; } = 64;
    /// <summary>The largest MaxDepth allowed: stored JSON of an XML body that deep still fits the stored-JSON bound.</summary>
    public const int MaxDepthCeiling = 400;
    public int MaxBundleEntries { get; set; } = 1000;
}

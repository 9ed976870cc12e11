using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests;

[Collection("server")]
public sealed class BinaryTests(ServerFixture server)
{
    readonly HttpClient _http = server.Http;

    static byte[] Document(int size, int seed)
    {
        var bytes = new byte[size];
        new Random(seed).NextBytes(bytes);
        "%PDF-1.7\n"u8.CopyTo(bytes);
        return bytes;
    }

    async Task<string> UploadAsync(byte[] bytes, string contentType = "application/pdf")
    {
        var content = new ByteArrayContent(bytes);
        content.Headers.ContentType = new MediaTypeHeaderValue(contentType);
        var response = await _http.PostAsync("Binary", content);
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        return response.Headers.Location!.Segments[^3].TrimEnd('/');
    }

    static HttpRequestMessage Get(string url, string accept = "*/*")
    {
        var request = new HttpRequestMessage(HttpMethod.Get, url);
        request.Headers.Accept.Clear();
        request.Headers.TryAddWithoutValidation("Accept", accept);
        return request;
    }

    [Fact]
    public async System.Threading.Tasks.Task A_50_MB_document_round_trips_exactly_and_streams()
    {
        var bytes = Document(50 * 1024 * 1024, 1);
        var id = await UploadAsync(bytes);

        var allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
        using var response = await _http.SendAsync(Get($"Binary/{id}", "application/pdf"), HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("application/pdf", response.Content.Headers.ContentType!.MediaType);
        Assert.Equal(bytes.Length, response.Content.Headers.ContentLength);
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA1);
        await using (var body = await response.Content.ReadAsStreamAsync())
        {
            var buffer = new byte[64 * 1024];
            int n;
            while ((n = await body.ReadAsync(buffer)) > 0) sha.AppendData(buffer, 0, n);
        }
        var allocated = GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore;

        Assert.Equal(SHA1.HashData(bytes), sha.GetHashAndReset());
        // Server and client share this process: everything they allocated to move 50 MB stays far below 50 MB.
        Assert.True(allocated < 20 * 1024 * 1024, $"retrieving 50 MB allocated {allocated / 1024 / 1024} MB: the document was buffered");
    }

    [Fact]
    public async System.Threading.Tasks.Task Range_requests_return_exactly_the_requested_bytes()
    {
        var bytes = Document(3 * 1024 * 1024 + 17, 2); // spans chunk boundaries
        var id = await UploadAsync(bytes);
        foreach (var (header, from, to) in new[] { ("bytes=0-9", 0L, 9L), ("bytes=1048570-1048590", 1048570L, 1048590L), ("bytes=-100", bytes.Length - 100L, bytes.Length - 1L), ("bytes=3145700-", 3145700L, bytes.Length - 1L) })
        {
            var request = Get($"Binary/{id}");
            request.Headers.TryAddWithoutValidation("Range", header);
            var response = await _http.SendAsync(request);
            Assert.True(response.StatusCode == HttpStatusCode.PartialContent, $"{header}: {(int)response.StatusCode}");
            Assert.Equal(bytes[(int)from..(int)(to + 1)], await response.Content.ReadAsByteArrayAsync());
            Assert.Equal($"bytes {from}-{to}/{bytes.Length}", response.Content.Headers.ContentRange!.ToString());
        }
        var bad = Get($"Binary/{id}");
        bad.Headers.TryAddWithoutValidation("Range", $"bytes={bytes.Length + 5}-");
        var refused = await _http.SendAsync(bad);
        Assert.Equal(HttpStatusCode.RequestedRangeNotSatisfiable, refused.StatusCode);
        Assert.Equal($"bytes */{bytes.Length}", refused.Content.Headers.ContentRange!.ToString());
    }

    [Fact]
    public async System.Threading.Tasks.Task If_None_Match_on_the_document_gives_304()
    {
        var id = await UploadAsync(Document(1000, 3));
        var request = Get($"Binary/{id}");
        request.Headers.TryAddWithoutValidation("If-None-Match", "W/\"1\"");
        Assert.Equal(HttpStatusCode.NotModified, (await _http.SendAsync(request)).StatusCode);
    }

    [Fact]
    public async System.Threading.Tasks.Task Asked_for_in_a_FHIR_format_a_Binary_is_a_resource_with_its_data()
    {
        var bytes = Document(300_000, 4);
        var id = await UploadAsync(bytes, "image/png");
        var json = await Fhir.ExpectAsync<Binary>(await _http.SendAsync(Get($"Binary/{id}", "application/fhir+json")), HttpStatusCode.OK);
        Assert.Equal("image/png", json.ContentType);
        Assert.Equal(bytes, json.Data);
        var xml = await _http.SendAsync(Get($"Binary/{id}?_format=xml"));
        Assert.Equal("application/fhir+xml", xml.Content.Headers.ContentType!.MediaType);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_Binary_posted_as_FHIR_JSON_is_served_raw()
    {
        var bytes = "健康診断結果"u8.ToArray();
        var response = await _http.PostAsync("Binary", Fhir.Json(new Binary { ContentType = "text/plain; charset=utf-8", Data = bytes }));
        var created = await Fhir.ExpectAsync<Binary>(response, HttpStatusCode.Created);
        var raw = await _http.SendAsync(Get($"Binary/{created.Id}"));
        Assert.Equal(bytes, await raw.Content.ReadAsByteArrayAsync());
        Assert.StartsWith("text/plain", raw.Content.Headers.ContentType!.ToString());
    }

    [Fact]
    public async System.Threading.Tasks.Task A_raw_upload_without_content_type_is_refused()
    {
        var content = new ByteArrayContent([1, 2, 3]);
        var response = await _http.PostAsync("Binary", content);
        await Fhir.ExpectAsync<OperationOutcome>(response, HttpStatusCode.BadRequest);
    }
}

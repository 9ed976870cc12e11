using System.Net;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests;

[Collection("server")]
public sealed class PatchTests(ServerFixture server)
{
    readonly HttpClient _http = server.Http;

    static Parameters Operation(string type, string path, DataType? value = null, string? name = null)
    {
        var op = new Parameters.ParameterComponent { Name = "operation" };
        op.Part.Add(new() { Name = "type", Value = new Code(type) });
        op.Part.Add(new() { Name = "path", Value = new FhirString(path) });
        if (name is not null) op.Part.Add(new() { Name = "name", Value = new FhirString(name) });
        if (value is not null) op.Part.Add(new() { Name = "value", Value = value });
        return new Parameters { Parameter = [op] };
    }

    async Task<DocumentReference> CreateDocumentAsync()
    {
        var doc = new DocumentReference
        {
            Status = DocumentReferenceStatus.Current,
            Description = Fhir.Unique("健診結果"),
            Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "application/pdf", Url = "http://example.org/a.pdf" } }],
        };
        return await Fhir.ExpectAsync<DocumentReference>(await _http.PostAsync("DocumentReference", Fhir.Json(doc)), HttpStatusCode.Created);
    }

    [Fact]
    public async System.Threading.Tasks.Task Replace_sets_a_coded_element_and_makes_a_new_version()
    {
        var doc = await CreateDocumentAsync();
        var response = await _http.PatchAsync($"DocumentReference/{doc.Id}", Fhir.Json(Operation("replace", "DocumentReference.status", new Code("superseded"))));
        var patched = await Fhir.ExpectAsync<DocumentReference>(response, HttpStatusCode.OK);
        Assert.Equal(DocumentReferenceStatus.Superseded, patched.Status);
        Assert.Equal("2", patched.Meta.VersionId);
        var found = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"DocumentReference?_id={doc.Id}&status=superseded"), HttpStatusCode.OK);
        Assert.Equal(1, found.Total); // the index follows the patch
    }

    [Fact]
    public async System.Threading.Tasks.Task Add_appends_and_delete_removes()
    {
        var doc = await CreateDocumentAsync();
        await Fhir.ExpectAsync<DocumentReference>(await _http.PatchAsync($"DocumentReference/{doc.Id}",
            Fhir.Json(Operation("add", "DocumentReference", new CodeableConcept("http://loinc.org", "11502-2"), "category"))), HttpStatusCode.OK);
        var deleted = await Fhir.ExpectAsync<DocumentReference>(await _http.PatchAsync($"DocumentReference/{doc.Id}",
            Fhir.Json(Operation("delete", "DocumentReference.description"))), HttpStatusCode.OK);
        Assert.Single(deleted.Category);
        Assert.Null(deleted.Description);
    }

    [Theory]
    [InlineData("replace", "DocumentReference.nothing", HttpStatusCode.UnprocessableEntity)]
    [InlineData("replace", "DocumentReference.status", HttpStatusCode.BadRequest)]  // no value
    [InlineData("move", "DocumentReference.content", HttpStatusCode.BadRequest)]
    [InlineData("replace", "DocumentReference.status.where(", HttpStatusCode.BadRequest)]
    public async System.Threading.Tasks.Task A_bad_patch_is_refused_and_changes_nothing(string type, string path, HttpStatusCode status)
    {
        var doc = await CreateDocumentAsync();
        await Fhir.ExpectAsync<OperationOutcome>(await _http.PatchAsync($"DocumentReference/{doc.Id}", Fhir.Json(Operation(type, path))), status);
        var current = await Fhir.ExpectAsync<DocumentReference>(await _http.GetAsync($"DocumentReference/{doc.Id}"), HttpStatusCode.OK);
        Assert.Equal("1", current.Meta.VersionId);
    }

    [Fact]
    public async System.Threading.Tasks.Task Patch_with_a_stale_If_Match_is_412()
    {
        var doc = await CreateDocumentAsync();
        var request = new HttpRequestMessage(HttpMethod.Patch, $"DocumentReference/{doc.Id}") { Content = Fhir.Json(Operation("replace", "DocumentReference.status", new Code("superseded"))) };
        request.Headers.TryAddWithoutValidation("If-Match", "W/\"5\"");
        await Fhir.ExpectAsync<OperationOutcome>(await _http.SendAsync(request), HttpStatusCode.PreconditionFailed);
    }

    [Fact]
    public async System.Threading.Tasks.Task JSON_Patch_is_refused_with_415()
    {
        var doc = await CreateDocumentAsync();
        var content = new StringContent("[{\"op\":\"remove\",\"path\":\"/description\"}]", System.Text.Encoding.UTF8, "application/json-patch+json");
        await Fhir.ExpectAsync<OperationOutcome>(await _http.PatchAsync($"DocumentReference/{doc.Id}", content), HttpStatusCode.UnsupportedMediaType);
    }

    [Fact]
    public async System.Threading.Tasks.Task Patching_an_unknown_resource_is_404()
    {
        await Fhir.ExpectAsync<OperationOutcome>(await _http.PatchAsync("DocumentReference/nope", Fhir.Json(Operation("delete", "DocumentReference.description"))), HttpStatusCode.NotFound);
    }
}

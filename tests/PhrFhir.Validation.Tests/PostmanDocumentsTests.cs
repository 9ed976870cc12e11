using System.Text.Json;
using System.Text.Json.Nodes;

namespace PhrFhir.Validation.Tests;

/// <summary>
/// examples/postman/Documents.postman_collection.json carries our example documents as request bodies
/// (a Postman collection cannot read files): each must stay exactly the document in examples/documents/,
/// so that what the collection proves about the examples is about these examples.
/// </summary>
public sealed class PostmanDocumentsTests
{
    private static readonly string Collection = Path.Combine(ValidatorFixture.RepositoryRoot, "examples", "postman", "Documents.postman_collection.json");

    [Theory]
    [InlineData("HS037-checkup-report.json")]
    [InlineData("HS038-referral.json")]
    [InlineData("HS039-discharge-summary.json")]
    public void The_Documents_collection_pushes_the_example_document_as_it_is_in_examples_documents(string file)
    {
        var example = JsonNode.Parse(File.ReadAllText(Path.Combine(ValidatorFixture.RepositoryRoot, "examples", "documents", file)));
        var bodies = Requests(JsonNode.Parse(File.ReadAllText(Collection))!)
            .Select(request => request["body"]?["raw"]?.GetValue<string>())
            .Select(Parse).OfType<JsonNode>().ToList();
        Assert.True(bodies.Any(body => JsonNode.DeepEquals(body, example)),
            $"No request of {Collection} has examples/documents/{file} as its body: replace the body of its \"POST /Bundle\" request with the file.");
    }

    private static IEnumerable<JsonNode> Requests(JsonNode node) =>
        (node["item"]?.AsArray() ?? []).OfType<JsonNode>()
            .SelectMany(item => item["request"] is { } request ? [request] : Requests(item));

    // Bodies with Postman variables ({{…}} where a number goes) are not JSON, and are not the examples.
    private static JsonNode? Parse(string? raw)
    {
        if (raw is null) return null;
        try { return JsonNode.Parse(raw); }
        catch (JsonException) { return null; }
    }
}

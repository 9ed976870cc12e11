using System.Security.Cryptography;
using Hl7.Fhir.Model;
using Microsoft.Extensions.Options;
using PhrFhir.Server.Rest;
using PhrFhir.Storage;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Mhd;

/// <summary>
/// IHE MHD ITI-105 Simplified Publish: POST [base]/DocumentReference with the document itself in
/// content.attachment.data. The registry stores the bytes as a Binary, points attachment.url at it,
/// fills size and hash, adds a SubmissionSet, and registers the three like an ITI-65 submission.
/// </summary>
public static class SimplifiedPublish
{
    /// <summary>A DocumentReference carrying its document inline is a Simplified Publish.</summary>
    public static bool Applies(Resource resource) =>
        resource is DocumentReference doc && doc.Content.Any(c => c.Attachment?.Data is not null);

    public static async Task HandleAsync(HttpContext ctx, DocumentReference doc, FhirStore store, ResourceWrites writes)
    {
        var options = ctx.RequestServices.GetRequiredService<IOptions<MhdOptions>>().Value;
        var baseUrl = FhirResponse.BaseUrl(ctx.Request);
        var bundle = new Bundle { Type = Bundle.BundleType.Transaction };
        var docUrl = "urn:uuid:" + Guid.NewGuid();
        for (var i = 0; i < doc.Content.Count; i++)
        {
            var attachment = doc.Content[i].Attachment;
            if (attachment?.Data is not { } data) continue;
            if (attachment.Url is not null)
                throw FhirError.BadRequest("An attachment carries either data (ITI-105) or a url, not both. (data と url の両方があります)", $"DocumentReference.content[{i}].attachment");
            // What the sender says about the bytes must hold (XDSNonIdenticalSize/Hash, checked on submit);
            // what it left out, the registry fills in.
            attachment.SizeUnsignedInt ??= data.Length;
            attachment.Hash ??= SHA1.HashData(data);
            var binaryUrl = "urn:uuid:" + Guid.NewGuid();
            bundle.Entry.Add(new Bundle.EntryComponent
            {
                FullUrl = binaryUrl,
                Resource = new Binary { ContentType = attachment.ContentType ?? "application/octet-stream", Data = data },
                Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = "Binary" },
            });
            attachment.Data = null;
            attachment.Url = binaryUrl;
        }
        bundle.Entry.Insert(0, new Bundle.EntryComponent
        {
            FullUrl = docUrl,
            Resource = doc,
            Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = "DocumentReference" },
        });
        bundle.Entry.Insert(0, new Bundle.EntryComponent
        {
            FullUrl = "urn:uuid:" + Guid.NewGuid(),
            Resource = ProvideDocumentBundle.NewSubmissionSet(doc.Subject, [docUrl], options, baseUrl),
            Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = "List" },
        });

        var response = await ProvideDocumentBundle.SubmitAsync(ctx, bundle, store, writes);
        var created = response.Entry[1];
        ctx.Response.Headers.Location = created.Response!.Location;
        ctx.Response.Headers.ETag = created.Response.Etag;
        await FhirResponse.ResourceAsync(ctx, created.Resource!, 201);
    }
}

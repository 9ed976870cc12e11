namespace PhrFhir.Server.Mhd;

/// <summary>
/// The IHE MHD 4.2.3 actors and options this server implements, declared in GET /metadata as
/// `instantiates` of MHD's requirements CapabilityStatements (ITI TF-2x Appendix Z.3: each MHD transaction
/// "shall provide a CapabilityStatement ... indicating the transaction has been implemented").
/// Adding a URL here is a conformance claim: list only what the server really does.
/// </summary>
public static class MhdCapabilities
{
    const string Base = "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/";

    public static IReadOnlyList<string> Instantiates { get; } =
    [
        // ITI-65 Provide Document Bundle (ProvideDocumentBundle.cs) with the Minimal, Comprehensive and
        // UnContained ProvideBundle profiles. "DocumentRecipient" is the actor with no declared option.
        Base + "IHE.MHD.DocumentRecipient",
        Base + "IHE.MHD.DocumentRecipient.Comprehensive",
        Base + "IHE.MHD.DocumentRecipient.UnContained",
        // ITI-105 Simplified Publish (SimplifiedPublish.cs) and ITI-106 Generate Metadata (GenerateMetadata.cs).
        Base + "IHE.MHD.DocumentRecipient.Simplified",
        Base + "IHE.MHD.DocumentRecipient.Generate",
        // ITI-66 Find Document Lists and ITI-67 Find Document References (search, with MHD's own
        // SearchParameters loaded from the IG), ITI-68 Retrieve Document (the Binary at attachment.url).
        Base + "IHE.MHD.DocumentResponder",
    ];
}

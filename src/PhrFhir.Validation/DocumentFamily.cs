namespace PhrFhir.Validation;

/// <summary>
/// A set of documents validated against one conformance set: a root package (an IG) with the
/// dependencies its <c>ImplementationGuide.dependsOn</c> declares, plus FHIR R4 core.
/// </summary>
/// <param name="Id">Stable id used in configuration (<see cref="ValidationOptions.Policies"/>) and in the cache file name.</param>
/// <param name="Title">What a person reads in status pages and logs.</param>
/// <param name="RootPackage">Folder of the root package, relative to the reference folder; null for R4 core alone.</param>
public sealed record DocumentFamily(string Id, string Title, string? RootPackage);

/// <summary>The document families this server knows. Order matters: when several families define
/// the same profile and the instance does not tell them apart, the first one is chosen.</summary>
public static class DocumentFamilies
{
    /// <summary>HS038 診療情報提供書 and HS039 退院時サマリー (JP-CLINS 1.5.2, depends on JP Core 1.1.2-url).</summary>
    public static readonly DocumentFamily Clins = new("jp-clins",
        "HS038 診療情報提供書 / HS039 退院時サマリー / CLINS 5情報 (jp-eCSCLINS.r4, IG 1.5.2)", "jp-documents/clins/package");

    /// <summary>HS037 健康診断結果報告書, IG 1.5.0 (compiled from FSH; snapshots generated here; JP Core 1.1.2-clins).</summary>
    public static readonly DocumentFamily ECheckup150 = new("jp-echeckup-1.5.0",
        "HS037 健康診断結果報告書 (eCheckupReport IG 1.5.0, compiled from FSH)", "jp-documents/echeckup/sushi-compiled-1.5.0");

    /// <summary>HS037 健康診断結果報告書, IG 1.1.3 (official snapshot package; JP Core 1.1.2).</summary>
    public static readonly DocumentFamily ECheckup113 = new("jp-echeckup-1.1.3",
        "HS037 健康診断結果報告書 (eCheckupReport IG 1.1.3)", "jp-documents/echeckup/package");

    /// <summary>IHE MHD 4.2.3 (compiled from FSH; depends on BALP 1.1.4).</summary>
    public static readonly DocumentFamily Mhd = new("ihe-mhd",
        "IHE MHD 4.2.3 (Document Sharing)", "ihe/MHD-4.2.3/sushi-compiled");

    /// <summary>
    /// IHE BALP 1.1.4 (Basic Audit Log Patterns; compiled from FSH, snapshots generated here): the AuditEvent
    /// profiles the server's own audit trail declares. MHD depends on it too, but a family of its own makes
    /// BALP the root, so its profiles are chosen here before MHD's copy.
    /// </summary>
    public static readonly DocumentFamily Balp = new("ihe-balp",
        "IHE BALP 1.1.4 (Basic Audit Log Patterns)", "ihe/BALP-1.1.4/sushi-compiled");

    /// <summary>FHIR R4 4.0.1 core only: resources that declare no known profile.</summary>
    public static readonly DocumentFamily Core = new("r4-core", "FHIR R4 4.0.1 core", null);

    /// <summary>All families, in order of preference.</summary>
    public static IReadOnlyList<DocumentFamily> All { get; } = [Clins, ECheckup150, ECheckup113, Mhd, Balp, Core];
}

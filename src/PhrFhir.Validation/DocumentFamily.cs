namespace PhrFhir.Validation;

/// <summary>
/// A set of documents validated against one conformance set: a root package (an IG) with the
/// dependencies it is validated with, as <c>profiles/packages.json</c> lists them under the
/// family's id, plus FHIR R4 core.
/// </summary>
/// <param name="Id">Stable id used in configuration (<see cref="ValidationOptions.Policies"/>), in <c>profiles/packages.json</c> and in the cache file name.</param>
/// <param name="Title">What a person reads in status pages and logs.</param>
public sealed record DocumentFamily(string Id, string Title);

/// <summary>The document families this server knows. Order matters: when several families define
/// the same profile and the instance does not tell them apart, the first one is chosen.</summary>
public static class DocumentFamilies
{
    /// <summary>HS038 診療情報提供書 and HS039 退院時サマリー (JP-CLINS 1.5.2, depends on JP Core 1.1.2-url).</summary>
    public static readonly DocumentFamily Clins = new("jp-clins",
        "HS038 診療情報提供書 / HS039 退院時サマリー / CLINS 5情報 (jp-eCSCLINS.r4, IG 1.5.2)");

    /// <summary>HS037 健康診断結果報告書, IG 1.5.0 (snapshots generated here where the package lacks them; JP Core 1.1.2-clins).</summary>
    public static readonly DocumentFamily ECheckup150 = new("jp-echeckup-1.5.0",
        "HS037 健康診断結果報告書 (eCheckupReport IG 1.5.0)");

    /// <summary>HS037 健康診断結果報告書, IG 1.1.3 (official snapshot package; JP Core 1.1.2).</summary>
    public static readonly DocumentFamily ECheckup113 = new("jp-echeckup-1.1.3",
        "HS037 健康診断結果報告書 (eCheckupReport IG 1.1.3)");

    /// <summary>IHE MHD 4.2.3 (validated with BALP 1.1.4).</summary>
    public static readonly DocumentFamily Mhd = new("ihe-mhd",
        "IHE MHD 4.2.3 (Document Sharing)");

    /// <summary>
    /// IHE BALP 1.1.4 (Basic Audit Log Patterns): the AuditEvent
    /// profiles the server's own audit trail declares. MHD depends on it too, but a family of its own makes
    /// BALP the root, so its profiles are chosen here before MHD's copy.
    /// </summary>
    public static readonly DocumentFamily Balp = new("ihe-balp",
        "IHE BALP 1.1.4 (Basic Audit Log Patterns)");

    /// <summary>
    /// Our own profiles for 健診事後措置 and 両立支援 (profiles/phrfhir.r4, with JP Core 1.1.2): Tasks, notices,
    /// work information, opinions, support plans, work measures (profiles/README.md).
    /// </summary>
    public static readonly DocumentFamily Phr = new("phrfhir",
        "PhrFhir 健診事後措置・両立支援 (our own profiles, phrfhir.r4)");

    /// <summary>FHIR R4 4.0.1 core only: resources that declare no known profile.</summary>
    public static readonly DocumentFamily Core = new("r4-core", "FHIR R4 4.0.1 core");

    /// <summary>All families, in order of preference.</summary>
    public static IReadOnlyList<DocumentFamily> All { get; } = [Clins, ECheckup150, ECheckup113, Mhd, Balp, Phr, Core];
}

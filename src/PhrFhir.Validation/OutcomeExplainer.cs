using System.Text.RegularExpressions;
using Hl7.Fhir.Model;

namespace PhrFhir.Validation;

/// <summary>
/// Turns the validator's OperationOutcome into one a Japanese integrator can act on: each issue
/// keeps severity, code and the English text (in <c>diagnostics</c>), gains a Japanese explanation
/// (<c>details.text</c>), a FhirPath <c>expression</c> with the entry index, and the rule it comes
/// from: profile (<c>operationoutcome-authority</c>), invariant key
/// (<c>operationoutcome-message-id</c>) and slice, element and rule kind in <see cref="RuleExtension"/>.
/// </summary>
public static partial class OutcomeExplainer
{
    /// <summary>Extension on an issue naming the rule it comes from (sub-extensions <c>kind</c>, <c>profile</c>, <c>element</c>, <c>slice</c>, <c>invariant</c>).</summary>
    public const string RuleExtension = "urn:phrfhir:validation:rule";

    /// <summary>Standard extension naming the profile an issue comes from.</summary>
    public const string AuthorityExtension = "http://hl7.org/fhir/StructureDefinition/operationoutcome-authority";

    /// <summary>Standard extension carrying a message id; here the invariant key (e.g. <c>bdl-7</c>).</summary>
    public const string MessageIdExtension = "http://hl7.org/fhir/StructureDefinition/operationoutcome-message-id";

    private const string FirelyIssueSystem = "http://hl7.org/fhir/dotnet-api-operation-outcome";
    private const string TracePrefix = "ElementDefinition trace: ";

    /// <summary>What kind of rule an issue is about; the Japanese text is chosen by it.</summary>
    public enum RuleKind
    {
        /// <summary>Anything not recognised below.</summary>
        Other,
        /// <summary>Too few or too many occurrences (min/max).</summary>
        Cardinality,
        /// <summary>A fixed[x] value is not matched.</summary>
        FixedValue,
        /// <summary>A pattern[x] value is not matched.</summary>
        Pattern,
        /// <summary>A code outside a required value set.</summary>
        RequiredBinding,
        /// <summary>A code outside an extensible/preferred value set (a warning).</summary>
        OtherBinding,
        /// <summary>A FhirPath invariant (constraint key) fails.</summary>
        Invariant,
        /// <summary>Slicing: closed slicing, order, or a slice's own rules.</summary>
        Slicing,
        /// <summary>A reference or a choice element of a type the profile does not allow.</summary>
        Type,
        /// <summary>An element the definition does not have.</summary>
        UnknownElement,
        /// <summary>A malformed primitive value (date, id, …).</summary>
        Value,
        /// <summary>A reference that cannot be resolved in the document.</summary>
        Reference,
        /// <summary>A code system or value set not available locally (JP terminology): not checked.</summary>
        TerminologyUnavailable,
        /// <summary>A profile that cannot be found or compiled, or a validator failure.</summary>
        ProfileUnusable,
    }

    /// <summary>Adds explanations to every issue of <paramref name="outcome"/>, in place, and returns it.</summary>
    public static OperationOutcome Explain(OperationOutcome outcome)
    {
        foreach (var issue in outcome.Issue) ExplainIssue(issue);
        return outcome;
    }

    private static void ExplainIssue(OperationOutcome.IssueComponent issue)
    {
        var english = issue.Details?.Text ?? issue.Diagnostics ?? "";
        var trace = issue.Diagnostics is { } d && d.StartsWith(TracePrefix, StringComparison.Ordinal) ? d[TracePrefix.Length..] : null;
        var number = issue.Details?.Coding.FirstOrDefault(c => c.System == FirelyIssueSystem)?.Code;
        var (profile, element) = ParseTrace(trace);
        profile ??= issue.GetExtensionValue<FhirUri>(AuthorityExtension)?.Value;
        var slice = SliceRegex().Match(english) is { Success: true } sm ? sm.Groups[1].Value : null;
        var invariant = issue.GetExtensionValue<FhirString>(MessageIdExtension)?.Value
            ?? (ConstraintRegex().Match(english) is { Success: true } cm ? cm.Groups[1].Value : null);
        var kind = Classify(number, english);

        if (kind == RuleKind.TerminologyUnavailable)
        {
            // Never silently valid, never a false error: say that it was not checked, and why.
            issue.Severity = OperationOutcome.IssueSeverity.Warning;
            issue.Code = OperationOutcome.IssueType.NotSupported;
        }
        if (kind == RuleKind.ProfileUnusable)
        {
            // Name the profile that could not be used, not the one whose element referred to it.
            if (QuotedProfileRegex().Match(english) is { Success: true } pm) profile = pm.Groups[1].Value;
            if (english.Contains("Encountered an error while loading schema", StringComparison.Ordinal))
                issue.Code = OperationOutcome.IssueType.Exception;
        }

        issue.Expression = issue.Expression.Select(ToFhirPath).ToList();
        issue.Diagnostics = english + (trace is null ? "" : $" [{TracePrefix}{trace}]");
        var japanese = Japanese(kind, english, element, slice, invariant, profile);
        issue.Details ??= new CodeableConcept();
        issue.Details.Text = japanese is null ? english : $"{japanese}\n{english}";

        if (profile is not null && issue.GetExtensionValue<FhirUri>(AuthorityExtension) is null)
            issue.AddExtension(AuthorityExtension, new FhirUri(profile));
        if (invariant is not null && issue.GetExtensionValue<FhirString>(MessageIdExtension) is null)
            issue.AddExtension(MessageIdExtension, new FhirString(invariant));
        var rule = new Extension { Url = RuleExtension };
        rule.AddExtension("kind", new Code(kind.ToString()));
        if (profile is not null) rule.AddExtension("profile", new FhirUri(profile));
        if (element is not null) rule.AddExtension("element", new FhirString(element));
        if (slice is not null) rule.AddExtension("slice", new FhirString(slice));
        if (invariant is not null) rule.AddExtension("invariant", new Id(invariant));
        issue.Extension.RemoveAll(e => e.Url == RuleExtension);
        issue.Extension.Add(rule);
    }

    /// <summary>The rule kind of an issue, from the validator's issue number and its text.</summary>
    public static RuleKind Classify(string? issueNumber, string message)
    {
        if (TerminologyUnavailableRegex().IsMatch(message)) return RuleKind.TerminologyUnavailable;
        return issueNumber switch
        {
            "1028" => RuleKind.Cardinality,
            "1008" => RuleKind.FixedValue,
            "1009" => RuleKind.Pattern,
            "1023" or "6001" or "6005" or "6007" => RuleKind.RequiredBinding,
            "1024" or "6008" => RuleKind.OtherBinding,
            "1012" or "1013" => RuleKind.Invariant,
            "1026" or "1027" or "2013" => RuleKind.Slicing,
            "1003" or "1004" or "1011" or "1015" or "1022" => RuleKind.Type,
            "1001" or "1029" => RuleKind.UnknownElement,
            "1000" or "1005" or "1006" or "1019" or "1020" => RuleKind.Value,
            "1016" or "1017" or "1018" => RuleKind.Reference,
            "4000" or "4002" or "4003" or "4009" or "5003" => RuleKind.ProfileUnusable,
            _ when message.Contains("slice", StringComparison.OrdinalIgnoreCase) => RuleKind.Slicing,
            _ => RuleKind.Other,
        };
    }

    private static string? Japanese(RuleKind kind, string english, string? element, string? slice, string? invariant, string? profile)
    {
        var where = element is null ? "" : $"要素 {element} ";
        var inSlice = slice is null ? "" : $"（スライス {slice}）";
        return kind switch
        {
            RuleKind.Cardinality when CardinalityRegex().Match(english) is { Success: true } m =>
                $"{where}{inSlice}の出現回数が {m.Groups[1].Value} 回で、プロファイルの多重度 {m.Groups[2].Value} に合いません。",
            RuleKind.Cardinality => $"{where}{inSlice}の出現回数がプロファイルの多重度に合いません。",
            RuleKind.FixedValue => $"{where}{inSlice}の値がプロファイルの固定値（fixed）と一致しません。",
            RuleKind.Pattern => $"{where}{inSlice}の値がプロファイルのパターン（pattern）と一致しません。",
            RuleKind.RequiredBinding => $"{where}{inSlice}のコードが、必須（required）バインディングの値セットに含まれていません。",
            RuleKind.OtherBinding => $"{where}{inSlice}のコードが、推奨（extensible/preferred）値セットに含まれていません。",
            RuleKind.Invariant => $"{where}{inSlice}が制約 {invariant ?? "(不明)"} を満たしていません。",
            RuleKind.Slicing => $"{where}{inSlice}がスライシングの規則（スライスの必須・上限・順序・閉じたスライス）に違反しています。",
            RuleKind.Type => $"{where}{inSlice}の型または参照先リソースの種類がプロファイルで許されていません。",
            RuleKind.UnknownElement => $"{where}はこのリソース型・プロファイルに定義されていない要素です。",
            RuleKind.Value => $"{where}{inSlice}の値の形式が不正です（空・長すぎる・範囲外・書式違反）。",
            RuleKind.Reference => $"{where}{inSlice}の参照先をこの文書の中で解決できません。",
            RuleKind.TerminologyUnavailable => TerminologyTargetRegex().Match(english) is { Success: true } t
                ? $"{where}のコードは検証していません：{t.Groups[1].Value} がこのサーバーにないためです{(JpTerminologyRegex().IsMatch(t.Groups[1].Value) ? "（JP 用語集 jpfhir-terminology 未導入）" : "")}。"
                : $"{where}のコードは検証していません：必要なコードシステムまたは値セットがこのサーバーにないためです。",
            RuleKind.ProfileUnusable => $"プロファイル {profile ?? "(不明)"} を読み込めない（見つからない、またはコンパイルできない）ため、このプロファイルでは検証できませんでした。",
            _ => null,
        };
    }

    /// <summary>
    /// The profile and element of the last step of a Firely definition trace, e.g.
    /// <c>Bundle(…JP_Bundle).entry.resource->Observation(…JP_Observation).code</c> gives
    /// (<c>…JP_Observation</c>, <c>Observation.code</c>).
    /// </summary>
    internal static (string? Profile, string? Element) ParseTrace(string? trace)
    {
        if (string.IsNullOrEmpty(trace)) return (null, null);
        var last = trace[(trace.LastIndexOf("->", StringComparison.Ordinal) is var i and >= 0 ? i + 2 : 0)..];
        var m = TraceStepRegex().Match(last);
        if (!m.Success) return (null, last);
        return (m.Groups[2].Value, m.Groups[1].Value + m.Groups[3].Value);
    }

    /// <summary>Firely locations name every step with an index (<c>entry[3].resource[0].code[0]</c>); a resource in an entry is single, so its <c>[0]</c> goes.</summary>
    internal static string ToFhirPath(string? location) => location?.Replace(".resource[0]", ".resource", StringComparison.Ordinal) ?? "";

    [GeneratedRegex(@"\(for slice ([^)]+)\)")]
    private static partial Regex SliceRegex();
    [GeneratedRegex(@"constraint ([A-Za-z0-9\-_.]+)")]
    private static partial Regex ConstraintRegex();
    [GeneratedRegex(@"cannot find codesystem|is unknown|unknown code ?system|not available locally", RegexOptions.IgnoreCase)]
    private static partial Regex TerminologyUnavailableRegex();
    [GeneratedRegex(@"(codesystem '[^']+'|valueset '[^']+')", RegexOptions.IgnoreCase)]
    private static partial Regex TerminologyTargetRegex();
    // The systems jpfhir-terminology holds: JLAC10/11, MEDIS masters, YJ and other MHLW/JAMI code systems (OIDs under 1.2.392).
    [GeneratedRegex(@"urn:oid:1\.2\.392\.|jpfhir\.jp/|jami\.jp/|medis", RegexOptions.IgnoreCase)]
    private static partial Regex JpTerminologyRegex();
    [GeneratedRegex(@"count is (\d+), which is not within the specified cardinality of ([0-9*]+\.\.[0-9*]+)")]
    private static partial Regex CardinalityRegex();
    [GeneratedRegex(@"profile '([^']+)'")]
    private static partial Regex QuotedProfileRegex();
    [GeneratedRegex(@"^(\w+)\(([^)]+)\)(.*)$")]
    private static partial Regex TraceStepRegex();
}

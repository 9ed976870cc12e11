using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using Firely.Fhir.Validation;
using Hl7.Fhir.Model;
using Hl7.Fhir.Specification.Terminology;

#pragma warning disable ExperimentalApi // Firely's documented schema-rewriting API (IAssertionContainer, BindingValidator), marked experimental

namespace PhrFhir.Validation;

/// <summary>
/// A <see cref="BindingValidator"/> that remembers the coded values it accepted and answers a value it has
/// accepted before without asking the terminology service again; every other value (a new one, or one the
/// original refused or warned about) goes to the original's own code, unchanged.
/// </summary>
/// <remarks>
/// Why: Firely 3.6.0's binding check calls the terminology service through <c>TaskHelper.Await</c>, a
/// <c>Task.Run</c> plus a blocking wait, even when the answer is already cached (<see cref="Terminology.CachedTerminologyService"/>).
/// An ITI-65 Bundle with three entries makes dozens of such calls (each entry is validated against its slice
/// profiles and its own); a dotnet-trace of ITI-65 with a 1 kB Binary showed two thirds of the validation
/// thread's time in that hop and the thread-pool workers woken for it spinning (docs/performance.md, "ITI-65").
/// It is safe to remember a success: the conformance set does not change while the family is loaded (the
/// same assumption as the terminology cache), the outcome of a binding depends only on the coded value
/// (its type and content, all of which is in the key) and the family's terminology service (kept with the
/// value, so a different service is asked again), and a success carries no issue whose location would differ.
/// <para>
/// <paramref name="inDiscriminator"/>: the binding decides which slice an element belongs to (SliceDiscriminators),
/// and Firely reads nothing of its report but the verdict, so every verdict — failure too — is remembered and
/// answered again without its issues.
/// </para>
/// </remarks>
internal sealed class RememberingBindingValidator(BindingValidator original, bool inDiscriminator = false)
    : BindingValidator(original.ValueSetUri, original.Strength, original.AbstractAllowed, original.Checks), IValidatable
{
    // Per binding; bounded so that free text (CodeableConcept.text) cannot grow it without limit.
    private const int Capacity = 4_096, MaxKeyLength = 2_048;
    private readonly ConcurrentDictionary<string, (ICodeValidationTerminologyService Service, ValidationResult Verdict)> _known = new(StringComparer.Ordinal);

    internal BindingValidator Original => original;

    internal bool InDiscriminator => inDiscriminator;

    ResultReport IValidatable.Validate(PocoNode input, ValidationSettings vc, ValidationState state)
    {
        var key = vc.ValidateCodeService is null ? null : Key(input);
        if (key is not null && _known.TryGetValue(key, out var known) && ReferenceEquals(known.Service, vc.ValidateCodeService))
            return known.Verdict switch
            {
                ValidationResult.Success => ResultReport.SUCCESS,
                ValidationResult.Failure => ResultReport.FAILURE,
                _ => ResultReport.UNDECIDED,
            };
        var report = ((IValidatable)original).Validate(input, vc, state);
        var remember = inDiscriminator || report.IsSuccessful && report.Evidence.Count == 0;
        if (key is not null && remember && _known.Count < Capacity) _known[key] = (vc.ValidateCodeService!, report.Result);
        return report;
    }

    /// <summary>The coded value's type and complete content (every element, extensions included), or null when too long to keep.</summary>
    internal static string? Key(PocoNode input)
    {
        if (input.Poco is not { } poco) return null;
        var key = new StringBuilder();
        Append(key, poco);
        return key.Length <= MaxKeyLength ? key.ToString() : null;
    }

    private static void Append(StringBuilder key, object? value)
    {
        switch (value)
        {
            case null:
                key.Append('~');
                break;
            case Base element:
                key.Append('{').Append(element.GetType().FullName);
                if (element is PrimitiveType primitive) { key.Append('='); Append(key, primitive.JsonValue); }
                foreach (var (name, child) in element.EnumerateElements())
                {
                    key.Append(';').Append(name).Append(':');
                    Append(key, child);
                }
                key.Append('}');
                break;
            case IEnumerable<Base> list:
                key.Append('[');
                foreach (var item in list) { Append(key, item); key.Append(','); }
                key.Append(']');
                break;
            case string text:
                key.Append('"').Append(text.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal)).Append('"');
                break;
            case byte[] bytes:
                key.Append(Convert.ToBase64String(bytes));
                break;
            default:
                key.Append(value.GetType().Name).Append(':').Append(Convert.ToString(value, CultureInfo.InvariantCulture));
                break;
        }
    }
}

using System.Collections.Concurrent;
using Firely.Fhir.Validation;
using Hl7.Fhir.Model;
using Hl7.Fhir.Support;

#pragma warning disable ExperimentalApi // Firely's documented schema-rewriting API (IAssertionContainer), marked experimental

namespace PhrFhir.Validation;

/// <summary>
/// Compiled schemas with every slice group made safe to validate with an empty bucket. Firely 3.6.0's
/// <c>SliceValidator</c> starts with <c>input as PocoNodeOrList ?? slices.First()</c>; an enclosing slice group
/// hands each of its slices its bucket, and an empty bucket is a plain empty list, so a re-sliced slice with no
/// members throws <c>InvalidOperationException: Sequence contains no elements</c>. <c>JP_Bundle_eReferral</c>
/// re-slices <c>entry:observation</c> (<c>observation/laboratory</c>): every HS038 without an entry conforming to
/// <c>JP_Observation_Common_eCS</c> was refused. docs/validation.md, "HS038: the validator threw on a referral
/// without a conforming Observation", has the evidence and the upstream report.
/// </summary>
/// <remarks>
/// Each compiled schema is rewritten once, through Firely's own <see cref="IAssertionContainer"/> API: every
/// <see cref="SliceValidator"/> becomes an <see cref="EmptySafeSliceValidator"/> with the same slices,
/// discriminators and rules. Compiled schemas are cached here (the compiler underneath is uncached, so each
/// schema is held once). The same rewrite makes every binding a <see cref="RememberingBindingValidator"/>, which
/// answers a coded value it accepted before without Firely's <c>Task.Run</c> round trip to the terminology service,
/// and gives every slice group discriminators that are compiled once (<see cref="SliceDiscriminators"/>).
/// </remarks>
internal sealed class EmptyResliceGuard(IElementSchemaResolver compiler) : IElementSchemaResolver
{
    private readonly ConcurrentDictionary<string, Lazy<ElementSchema?>> _schemas = new(StringComparer.Ordinal);

    public ElementSchema? GetSchema(Firely.Fhir.Validation.Canonical schemaUri)
    {
        var lazy = _schemas.GetOrAdd(schemaUri.ToString(), _ => new Lazy<ElementSchema?>(
            () => compiler.GetSchema(schemaUri) is { } schema ? (ElementSchema)Guard(schema) : null));
        try { return lazy.Value; }
        catch
        {
            // A profile that does not compile is reported by the validator each time it is asked for, as before.
            _schemas.TryRemove(new KeyValuePair<string, Lazy<ElementSchema?>>(schemaUri.ToString(), lazy));
            throw;
        }
    }

    /// <summary>The assertion with every slice group below it (itself included) made empty-safe.</summary>
    internal static IAssertion Guard(IAssertion assertion) => assertion switch
    {
        EmptySafeSliceValidator or RememberingBindingValidator => assertion,
        BindingValidator binding => new RememberingBindingValidator(binding),
        SliceValidator slice => new EmptySafeSliceValidator(SliceDiscriminators.WithCompiledConditions((SliceValidator)((IAssertionContainer)slice).WithChildren((_, child) => Guard(child)))),
        IAssertionContainer container => container.WithChildren((_, child) => Guard(child)),
        _ => assertion,
    };
}

/// <summary>
/// A <see cref="SliceValidator"/> that validates an empty bucket instead of throwing, and otherwise is the
/// original: any input that is not an empty plain list goes to the original's own code, unchanged.
/// </summary>
/// <remarks>
/// For an empty plain list it does what the original does once past the failing line: a required slice
/// without members is an error (<c>CONTENT_INCORRECT_OCCURRENCE</c>, as the original reports it; without an
/// element to point at, since there is none), then every slice's assertion and the default assertion are
/// validated with their (empty) buckets — which reaches the slice groups nested in them, so nothing the
/// profile asks for is skipped. It stays a <see cref="SliceValidator"/> so that
/// <c>ElementSchema</c>, which on empty input validates only its slice groups (to report required slices),
/// still finds it.
/// </remarks>
internal sealed class EmptySafeSliceValidator(SliceValidator original)
    : SliceValidator(original.Ordered, original.DefaultAtEnd, original.Default, original.Slices, original.MultiCase), IGroupValidatable, IAssertionContainer
{
    ResultReport IGroupValidatable.Validate(IEnumerable<PocoNode> input, ValidationSettings vc, ValidationState state)
    {
        if (input is PocoNodeOrList || input.Any()) return ((IGroupValidatable)original).Validate(input, vc, state);
        var results = Slices.Where(s => s.Required)
            .Select(s => new IssueAssertion(Issue.CONTENT_INCORRECT_OCCURRENCE, $"No elements matched required slice: '{s.Name}' (the enclosing slice has no elements)").AsResult(""))
            .ToList();
        results.AddRange(Slices.Select(s => s.Assertion).Append(Default).OfType<IGroupValidatable>().Select(a => a.Validate([], vc, state)));
        return ResultReport.Combine(results);
    }

    IAssertion IAssertionContainer.WithChildren(Func<AssertionStep, IAssertion, IAssertion> rewrite)
    {
        var rewritten = ((IAssertionContainer)original).WithChildren(rewrite);
        return ReferenceEquals(rewritten, original) ? this : new EmptySafeSliceValidator((SliceValidator)rewritten);
    }
}

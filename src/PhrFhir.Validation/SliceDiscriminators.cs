using Firely.Fhir.Validation;
using Hl7.Fhir.Model;
using Hl7.FhirPath;

#pragma warning disable ExperimentalApi // Firely's documented schema-rewriting API (IAssertionContainer, PathSelectorValidator, BindingValidator), marked experimental

namespace PhrFhir.Validation;

/// <summary>
/// The discriminators of a slice group (<see cref="SliceValidator.SliceCase.Condition"/>) rewritten so that what
/// Firely 3.6.0 recomputes on every validation run is computed once per compiled schema, with the same verdicts.
/// </summary>
/// <remarks>
/// A discriminator only decides which slice an element belongs to: <c>SliceValidator</c> reads nothing of a
/// condition's report but <see cref="ResultReport.IsSuccessful"/> (its issues are discarded). Two costs of it showed
/// in a dotnet-trace of ITI-65 load (docs/performance.md, "Session 8: ITI-65 validation"):
/// <list type="bullet">
/// <item>each run parsed and compiled every discriminator path again (<c>PathSelectorValidator</c> keeps its compiled
/// expressions in the run's <c>ValidationState</c>): <see cref="CompiledPathSelector"/> compiles its path once;</item>
/// <item>a value discriminator's binding asked the terminology service through Firely's <c>Task.Run</c> hop every time,
/// even for a value it had judged before (Firely's slices are not visited by schema rewrites, so
/// <see cref="RememberingBindingValidator"/> never reached them): a discriminator's binding becomes one that remembers
/// every verdict, success or failure, since the verdict is all a discriminator gives.</item>
/// </list>
/// Profile discriminators (<see cref="SchemaReferenceValidator"/>) are left as they are: they resolve their schema
/// through the family's compiled-schema cache, whose schemas are already rewritten.
/// </remarks>
internal static class SliceDiscriminators
{
    /// <summary>The slice group with its discriminators rewritten; slice assertions, order and rules unchanged.</summary>
    internal static SliceValidator WithCompiledConditions(SliceValidator slices) =>
        new(slices.Ordered, slices.DefaultAtEnd, slices.Default,
            slices.Slices.Select(s => new SliceValidator.SliceCase(s.Name, Condition(s.Condition), s.Assertion, s.Required)).ToList(),
            slices.MultiCase);

    /// <summary>A discriminator (or a part of one) rewritten; anything it does not know is kept as is.</summary>
    internal static IAssertion Condition(IAssertion condition) => condition switch
    {
        CompiledPathSelector or RememberingBindingValidator { InDiscriminator: true } => condition,
        PathSelectorValidator selector => new CompiledPathSelector(selector.Path, Condition(selector.Other)),
        RememberingBindingValidator remembering => new RememberingBindingValidator(remembering.Original, inDiscriminator: true),
        BindingValidator binding => new RememberingBindingValidator(binding, inDiscriminator: true),
        SliceValidator => condition, // a condition holds no slice group (Firely's DiscriminatorFactory); left to Firely if it ever does
        IAssertionContainer container => container.WithChildren((_, child) => Condition(child)),
        _ => condition,
    };
}

/// <summary>
/// A <see cref="PathSelectorValidator"/> whose FhirPath is compiled once (per compiler) instead of once per validation
/// run; it selects and hands the selection to the same assertion with the same rules as the original.
/// </summary>
internal sealed class CompiledPathSelector(string path, IAssertion other) : PathSelectorValidator(path, other), IValidatable
{
    // The original, for settings that name no FhirPath compiler (ours always name one: FamilyValidator).
    private readonly PathSelectorValidator _uncompiled = new(path, other);
    private volatile Compiled? _compiled;

    private sealed record Compiled(FhirPathCompiler Compiler, CompiledExpression Expression);

    ResultReport IValidatable.Validate(PocoNode input, ValidationSettings vc, ValidationState state)
    {
        if (vc.FhirPathCompiler is not { } compiler) return ((IValidatable)_uncompiled).Validate(input, vc, state);
        var compiled = _compiled;
        if (compiled is null || !ReferenceEquals(compiled.Compiler, compiler))
            _compiled = compiled = new Compiled(compiler, compiler.Compile(Path));
        var selected = compiled.Expression(input, new EvaluationContext()).ToList();
        // As PathSelectorValidator: a group assertion takes the whole selection; any other exactly one element.
        if (Other is IGroupValidatable group) return group.Validate(selected, vc, state);
        return selected.Count switch
        {
            1 => Other is IValidatable single ? single.Validate(selected[0], vc, state) : ResultReport.SUCCESS,
            0 => new ResultReport(ValidationResult.Failure, new TraceAssertion(input.GetLocation(), $"The FhirPath selector {Path} did not return any results.")),
            _ => new ResultReport(ValidationResult.Failure, new TraceAssertion(input.GetLocation(), $"The FhirPath selector {Path} returned too many ({selected.Count}) results.")),
        };
    }
}

using Firely.Fhir.Validation;
using Hl7.Fhir.Model;
using Hl7.Fhir.Specification.Source;
using Hl7.Fhir.Support;
using Hl7.Fhir.Specification.Terminology;

#pragma warning disable ExperimentalApi // SliceValidator, PathSelectorValidator, BindingValidator and the schema-rewriting API are marked experimental

namespace PhrFhir.Validation.Tests;

/// <summary>
/// Slice discriminators rewritten by the compiled-schema cache (SliceDiscriminators): paths compiled once,
/// binding verdicts remembered per value. Each element must still land in the slice its own value decides.
/// </summary>
public sealed class SliceDiscriminatorTests
{
    const string Colours = "urn:phrfhir:test:colours";
    const string ValueSetUrl = "urn:phrfhir:test:valueset:colours";

    /// <summary>A real local terminology service over a two-code value set, counting the questions it gets.</summary>
    sealed class CountingTerminology : ICodeValidationTerminologyService
    {
        readonly ICodeValidationTerminologyService _inner = new LocalTerminologyService(new InMemoryResourceResolver(
            new CodeSystem { Url = Colours, Status = PublicationStatus.Active, Content = CodeSystemContentMode.Complete, Concept = [new() { Code = "red" }, new() { Code = "blue" }, new() { Code = "green" }] },
            new ValueSet { Url = ValueSetUrl, Status = PublicationStatus.Active, Compose = new ValueSet.ComposeComponent { Include = [new() { System = Colours, Concept = [new() { Code = "red" }, new() { Code = "blue" }] }] } }));

        public int Questions;

        public Task<Parameters> ValueSetValidateCode(Parameters parameters, string? id = null, bool useGet = false)
        {
            Interlocked.Increment(ref Questions);
            return _inner.ValueSetValidateCode(parameters, id, useGet);
        }

        public Task<Parameters> Subsumes(Parameters parameters, string? id = null, bool useGet = false) => _inner.Subsumes(parameters, id, useGet);
    }

    /// <summary>
    /// Codings sliced by value (the discriminator: <c>$this</c> in the colours value set, as Firely's DiscriminatorFactory
    /// builds a value discriminator from a binding): the slice accepts its members, the open default refuses the rest
    /// with one issue each, so the issues count the elements that did not match.
    /// </summary>
    static SliceValidator ColourSlices() => new(ordered: false, defaultAtEnd: false,
        @default: new IssueAssertion(Issue.CONTENT_ELEMENT_FAILS_SLICING_RULE, "not a colour of the value set"),
        slices: [new SliceValidator.SliceCase("colour",
            new PathSelectorValidator("$this", new BindingValidator(new Firely.Fhir.Validation.Canonical(ValueSetUrl), BindingValidator.BindingStrength.Required)),
            ResultAssertion.SUCCESS)]);

    static IGroupValidatable Rewritten(SliceValidator slices) => (IGroupValidatable)EmptyResliceGuard.Guard(slices);

    static ResultReport Slice(IGroupValidatable slices, ICodeValidationTerminologyService terminology, params string[] codes) =>
        slices.Validate(codes.Select((c, i) => new PocoNode(new Coding(Colours, c), null, null, $"coding[{i}]")).ToList(),
            new ValidationSettings { ValidateCodeService = terminology, FhirPathCompiler = FhirPathValidator.DefaultCompiler }, new ValidationState());

    [Fact]
    public void The_rewrite_reaches_the_discriminators_of_every_slice_group()
    {
        var rewritten = (SliceValidator)EmptyResliceGuard.Guard(ColourSlices());
        var condition = Assert.IsType<CompiledPathSelector>(rewritten.Slices.Single().Condition);
        Assert.Equal("$this", condition.Path);
        Assert.True(Assert.IsType<RememberingBindingValidator>(condition.Other).InDiscriminator);
    }

    [Fact]
    public void Each_element_lands_in_the_slice_its_own_value_decides_and_each_value_is_asked_once()
    {
        var terminology = new CountingTerminology();
        var slices = Rewritten(ColourSlices());

        var first = Slice(slices, terminology, "red", "green", "red", "blue", "green");
        Assert.Equal(2, first.Errors.Count); // both greens fall to the default
        Assert.Equal(3, terminology.Questions); // red, green, blue

        // A second, different list after the verdicts are known: green is still refused, red and blue still match,
        // none of them is asked again; a new value is.
        var second = Slice(slices, terminology, "green", "blue", "red", "green", "green");
        Assert.Equal(3, second.Errors.Count);
        Assert.Equal(3, terminology.Questions);
        var third = Slice(slices, terminology, "yellow");
        Assert.Single(third.Errors);
        Assert.Equal(4, terminology.Questions);
    }

    [Fact]
    public void The_rewritten_group_sorts_elements_as_Firelys_own_does()
    {
        foreach (var codes in new[] { new[] { "red" }, ["green"], ["red", "green", "blue"], ["green", "green"], ["blue", "purple", "red", "red"] })
        {
            var original = Slice(ColourSlices(), new CountingTerminology(), codes);
            var rewritten = Slice(Rewritten(ColourSlices()), new CountingTerminology(), codes);
            Assert.Equal(original.Result, rewritten.Result);
            Assert.Equal(original.Errors.Select(e => e.Message), rewritten.Errors.Select(e => e.Message));
        }
    }

    [Fact]
    public void A_verdict_is_not_carried_to_another_terminology_service()
    {
        var slices = Rewritten(ColourSlices());
        var one = new CountingTerminology();
        var other = new CountingTerminology(); // another family's terminology: its own answers
        Slice(slices, one, "red", "green");
        Slice(slices, other, "red", "green");
        Assert.Equal(2, one.Questions);
        Assert.Equal(2, other.Questions);
    }
}

using Firely.Fhir.Validation;
using Hl7.Fhir.Model;
using Hl7.Fhir.Specification.Source;
using Hl7.Fhir.Specification.Terminology;

#pragma warning disable ExperimentalApi // BindingValidator and the schema-rewriting API are marked experimental

namespace PhrFhir.Validation.Tests;

/// <summary>
/// The binding check that remembers accepted codes (RememberingBindingValidator): a code accepted once is
/// not asked again, anything else still goes to the terminology service and gets its error every time.
/// </summary>
public sealed class RememberingBindingTests
{
    const string ValueSetUrl = "urn:phrfhir:test:valueset:colours";

    /// <summary>A real local terminology service over a two-code value set, counting the questions it gets.</summary>
    sealed class CountingTerminology : ICodeValidationTerminologyService
    {
        readonly ICodeValidationTerminologyService _inner = new LocalTerminologyService(new InMemoryResourceResolver(
            new CodeSystem { Url = "urn:phrfhir:test:colours", Status = PublicationStatus.Active, Content = CodeSystemContentMode.Complete, Concept = [new() { Code = "red" }, new() { Code = "blue" }] },
            new ValueSet { Url = ValueSetUrl, Status = PublicationStatus.Active, Compose = new ValueSet.ComposeComponent { Include = [new() { System = "urn:phrfhir:test:colours" }] } }));

        public int Questions;

        public Task<Parameters> ValueSetValidateCode(Parameters parameters, string? id = null, bool useGet = false)
        {
            Interlocked.Increment(ref Questions);
            return _inner.ValueSetValidateCode(parameters, id, useGet);
        }

        public Task<Parameters> Subsumes(Parameters parameters, string? id = null, bool useGet = false) => _inner.Subsumes(parameters, id, useGet);
    }

    static (IValidatable Binding, ValidationSettings Settings, CountingTerminology Terminology) Required()
    {
        var terminology = new CountingTerminology();
        var guarded = EmptyResliceGuard.Guard(new BindingValidator(new Firely.Fhir.Validation.Canonical(ValueSetUrl), BindingValidator.BindingStrength.Required));
        Assert.IsType<RememberingBindingValidator>(guarded); // the schema rewrite reaches bindings
        return ((IValidatable)guarded, new ValidationSettings { ValidateCodeService = terminology }, terminology);
    }

    static ResultReport Check(IValidatable binding, ValidationSettings settings, Base value) =>
        binding.Validate(new PocoNode(value, null, null, "code"), settings, new ValidationState());

    [Fact]
    public void A_code_accepted_once_is_accepted_again_without_asking_the_terminology_service()
    {
        var (binding, settings, terminology) = Required();
        Assert.True(Check(binding, settings, new Coding("urn:phrfhir:test:colours", "red")).IsSuccessful);
        Assert.True(Check(binding, settings, new Coding("urn:phrfhir:test:colours", "red")).IsSuccessful);
        Assert.True(Check(binding, settings, new Coding("urn:phrfhir:test:colours", "red")).IsSuccessful);
        Assert.Equal(1, terminology.Questions);
    }

    [Fact]
    public void A_refused_code_is_refused_every_time_and_asked_each_time()
    {
        var (binding, settings, terminology) = Required();
        Assert.True(Check(binding, settings, new Coding("urn:phrfhir:test:colours", "red")).IsSuccessful);
        for (var i = 0; i < 3; i++)
        {
            var refused = Check(binding, settings, new Coding("urn:phrfhir:test:colours", "green"));
            Assert.False(refused.IsSuccessful, $"attempt {i + 1}: a code outside the value set passed");
            Assert.NotEmpty(refused.Evidence.OfType<IssueAssertion>());
        }
        Assert.Equal(4, terminology.Questions);
    }

    [Fact]
    public void A_value_that_differs_in_any_element_from_an_accepted_one_is_checked_again()
    {
        var (binding, settings, terminology) = Required();
        Assert.True(Check(binding, settings, new Coding("urn:phrfhir:test:colours", "red")).IsSuccessful);
        // Same code, another system: not in the value set, whatever was accepted before.
        Assert.False(Check(binding, settings, new Coding("urn:phrfhir:test:other", "red")).IsSuccessful);
        // Same coding inside a CodeableConcept: another type, asked again.
        Assert.True(Check(binding, settings, new CodeableConcept("urn:phrfhir:test:colours", "red")).IsSuccessful);
        Assert.Equal(3, terminology.Questions);
    }

    [Fact]
    public void Another_terminology_service_is_asked_again()
    {
        var (binding, settings, terminology) = Required();
        Assert.True(Check(binding, settings, new Coding("urn:phrfhir:test:colours", "red")).IsSuccessful);
        var other = new CountingTerminology();
        Assert.True(Check(binding, new ValidationSettings { ValidateCodeService = other }, new Coding("urn:phrfhir:test:colours", "red")).IsSuccessful);
        Assert.Equal(1, terminology.Questions);
        Assert.Equal(1, other.Questions);
    }
}

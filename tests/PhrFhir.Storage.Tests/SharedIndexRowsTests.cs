using Hl7.Fhir.FhirPath;
using Hl7.Fhir.Model;
using PhrFhir.Storage.Search;

namespace PhrFhir.Storage.Tests;

/// <summary>
/// String parameters that select the same values on a type (R4 Patient.phonetic and Patient.name) are stored once
/// (SearchParam.RowsOf, issue #12): a search on either reads the same rows, so the rows must be the same.
/// </summary>
public sealed class SharedIndexRowsTests
{
    static readonly SearchParameters Registry = SearchParameters.CreateDefault();

    [Fact]
    public void Patient_phonetic_reads_the_rows_of_Patient_name_and_is_not_indexed_again()
    {
        var phonetic = Registry.Find("Patient", "phonetic")!;
        Assert.Equal("Patient.name", phonetic.Key("Patient"));
        Assert.Equal("Patient.name", Registry.Find("Patient", "name")!.Key("Patient"));

        var patient = new Patient
        {
            Id = "p",
            Name = [new HumanName { Family = "山田", Given = ["太郎"], Text = "山田 太郎" }, new HumanName { Family = "ヤマダ", Given = ["タロウ"] }],
        };
        var rows = new SearchIndexer(Registry).Extract(patient);
        Assert.DoesNotContain(rows.Strings, r => r.Param == "Patient.phonetic");
        string[] expected = ["山田", "山田 太郎", "太郎", "やまだ", "たろう"];
        Assert.Equal(expected.Order(StringComparer.Ordinal), rows.Strings.Where(r => r.Param == "Patient.name").Select(r => r.Norm).Order(StringComparer.Ordinal));
    }

    /// <summary>Every parameter stored under another's code selects, on every sample resource, exactly what that one selects.</summary>
    [Theory]
    [MemberData(nameof(SearchExpressionTests.Resources), MemberType = typeof(SearchExpressionTests))]
    public void A_parameter_sharing_rows_selects_what_the_stored_one_selects(string name, Resource resource)
    {
        var root = new PocoNode(resource, null, null, null);
        foreach (var p in Registry.For(resource.TypeName).Where(p => p.RowsOf is not null))
        {
            var stored = Registry.Find(resource.TypeName, p.RowsOf!)!;
            Assert.Equal(SearchParamType.String, p.Type);
            Assert.Equal(p.Type, stored.Type);
            var mine = p.Compiled.Invoke([root], new FhirEvaluationContext()).Select(n => n.Poco).ToList();
            var theirs = stored.Compiled.Invoke([root], new FhirEvaluationContext()).Select(n => n.Poco).ToList();
            Assert.True(mine.Count == theirs.Count && mine.Zip(theirs).All(x => ReferenceEquals(x.First, x.Second) || x.First.IsExactly(x.Second)),
                $"{name}: {p.Code} and {stored.Code} select different values");
        }
    }

    [Fact]
    public void Only_same_expression_string_parameters_share_rows()
    {
        var shared = new[] { "Patient", "Practitioner", "RelatedPerson", "Person", "Observation", "DocumentReference" }
            .SelectMany(t => Registry.For(t).Where(p => p.RowsOf is not null).Select(p => $"{t}.{p.Code}->{p.RowsOf}")).Order(StringComparer.Ordinal);
        Assert.Equal(["Patient.phonetic->name", "Person.phonetic->name", "Practitioner.phonetic->name", "RelatedPerson.phonetic->name"], shared);
    }
}

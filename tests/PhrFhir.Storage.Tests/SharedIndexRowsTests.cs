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
        // The family and given names are the rows of `family` and `given` (SearchParam.PartsIn): `name` keeps the text.
        Assert.Equal(["山田 太郎"], rows.Strings.Where(r => r.Param == "Patient.name").Select(r => r.Norm));
        Assert.Equal(["やまだ", "山田"], rows.Strings.Where(r => r.Param == "Patient.family").Select(r => r.Norm).Order(StringComparer.Ordinal));
        Assert.Equal(["たろう", "太郎"], rows.Strings.Where(r => r.Param == "Patient.given").Select(r => r.Norm).Order(StringComparer.Ordinal));
        string[] expected = ["山田", "山田 太郎", "太郎", "やまだ", "たろう"];
        Assert.Equal(expected.Order(StringComparer.Ordinal), Norms(rows, phonetic.Keys("Patient")));
        Assert.Equal(expected.Order(StringComparer.Ordinal), Norms(rows, Registry.Find("Patient", "name")!.Keys("Patient")));
    }

    static IEnumerable<string> Norms(IndexRows rows, string[] keys) =>
        rows.Strings.Where(r => keys.Contains(r.Param)).Select(r => r.Norm).Distinct().Order(StringComparer.Ordinal);

    [Fact]
    public void Names_and_addresses_are_read_from_their_parts_parameters()
    {
        string Parts(string type, string code) => string.Join(",", (Registry.Find(type, code)!.PartsIn ?? new Dictionary<string, string>()).Select(p => $"{p.Key}={p.Value}").Order(StringComparer.Ordinal));
        Assert.Equal("family=family,given=given", Parts("Patient", "name"));
        Assert.Equal("city=address-city,country=address-country,postalCode=address-postalcode,state=address-state", Parts("Patient", "address"));
        Assert.Equal("family=family,given=given", Parts("Practitioner", "name"));
        Assert.Equal("city=address-city,country=address-country,postalCode=address-postalcode,state=address-state", Parts("Organization", "address"));
        Assert.Equal(["Patient.name", "Patient.family", "Patient.given"], Registry.Find("Patient", "phonetic")!.Keys("Patient"));
        Assert.Equal(["Patient.family"], Registry.Find("Patient", "family")!.Keys("Patient"));
    }

    /// <summary>
    /// What a search on a string parameter reads — its own rows and its parts' — is, on every sample resource, every string
    /// field of the values its expression selects (R4 search.html#string: a HumanName's family, given, prefix, suffix and
    /// text; an Address's line, city, district, state, country, postalCode and text; a primitive whole).
    /// </summary>
    [Theory]
    [MemberData(nameof(SearchExpressionTests.Resources), MemberType = typeof(SearchExpressionTests))]
    public void A_string_parameter_reads_every_field_of_what_it_selects(string name, Resource resource)
    {
        var root = new PocoNode(resource, null, null, null);
        var rows = new SearchIndexer(Registry).Extract(resource);
        foreach (var p in Registry.For(resource.TypeName).Where(p => p.Type == SearchParamType.String && !SearchParameters.ColumnParameters.Contains(p.Code)))
        {
            IEnumerable<string?> Fields(Base v) => v switch
            {
                HumanName n => [n.Family, n.Text, .. n.Given, .. n.Prefix, .. n.Suffix],
                Address a => [.. a.Line, a.City, a.District, a.State, a.PostalCode, a.Country, a.Text],
                PrimitiveType { JsonValue: { } o } => [o.ToString()],
                _ => [],
            };
            IEnumerable<Base> selected;
            try { selected = p.Compiled.Invoke([root], new FhirEvaluationContext()).Select(n => n.Poco).ToList(); }
            catch (Exception) { continue; } // not this type's shape: the indexer writes nothing either
            var expected = selected.SelectMany(Fields).Where(f => !string.IsNullOrWhiteSpace(f)).Select(f => JapaneseText.Fold(f!.Length > 2000 ? f[..2000] : f))
                .Distinct().Order(StringComparer.Ordinal);
            Assert.True(expected.SequenceEqual(Norms(rows, p.Keys(resource.TypeName))), $"{name}: {p.Code} reads other values than it selects");
        }
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

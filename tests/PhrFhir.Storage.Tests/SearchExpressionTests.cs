using Hl7.Fhir.FhirPath;
using Hl7.Fhir.Model;
using Hl7.Fhir.Serialization;
using PhrFhir.Storage.Search;

namespace PhrFhir.Storage.Tests;

/// <summary>
/// The indexer's compiled search expressions (narrowed to one type, simple shapes walked directly)
/// must select exactly what the SDK's FhirPath engine selects with the full R4 expression.
/// </summary>
public sealed class SearchExpressionTests
{
    static readonly SearchParameters Registry = SearchParameters.CreateDefault();

    static readonly FhirEvaluationContext Context = new()
    {
        ElementResolver = r => ReferenceTarget.TypeOf(r) is { } t && ModelInfo.GetTypeForFhirType(t) is { } clr
            ? new PocoNode((Base)Activator.CreateInstance(clr)!, null, null, t) : null!,
    };

    /// <summary>Hand-made resources plus every JSON example of the reference folder, when present.</summary>
    public static IEnumerable<object[]> Resources()
    {
        var list = new List<Resource>
        {
            new Patient { Id = "p", Name = [new HumanName { Family = "山田", Given = ["太郎"] }], BirthDate = "1980-04-01", Deceased = new FhirBoolean(false),
                Telecom = [new ContactPoint(ContactPoint.ContactPointSystem.Email, null, "a@example.jp"), new ContactPoint(ContactPoint.ContactPointSystem.Phone, null, "090-1234-5678"),
                    new ContactPoint { Value = "no system" }, new ContactPoint(ContactPoint.ContactPointSystem.Phone, ContactPoint.ContactPointUse.Work, "03-1234-5678")], Meta = new Meta { Tag = [new Coding("urn:t", "x")], Profile = ["http://jpfhir.jp/fhir/core/StructureDefinition/JP_Patient"] } },
            new Observation { Id = "o", Status = ObservationStatus.Final, Code = new CodeableConcept("http://loinc.org", "4548-4"), Subject = new ResourceReference("Patient/p"),
                Effective = new Period { Start = "2024-01-01" }, Value = new Quantity(6.1m, "%"), Component = [new Observation.ComponentComponent { Code = new CodeableConcept("urn:c", "1"), Value = new CodeableConcept("urn:v", "2") }] },
            new Observation { Id = "o2", Status = ObservationStatus.Final, Code = new CodeableConcept { Text = "メモ" }, Subject = new ResourceReference("Group/g"), Value = new FhirString("陰性") },
            new DocumentReference { Id = "d", Status = DocumentReferenceStatus.Current, Subject = new ResourceReference("Patient/p"),
                Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "application/pdf", Url = "Binary/b" }, Format = new Coding("urn:f", "x") }],
                RelatesTo = [new DocumentReference.RelatesToComponent { Code = DocumentRelationshipType.Replaces, Target = new ResourceReference("DocumentReference/old") }] },
        };
        var parser = new FhirJsonDeserializer(new DeserializerSettings().UsingMode(DeserializationMode.Recoverable));
        for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
        {
            var folder = Path.Combine(dir.FullName, "shared", "ref", "jp-core", "jp-core.r4-1.1.2", "package", "example");
            if (!Directory.Exists(folder)) continue;
            foreach (var f in Directory.EnumerateFiles(folder, "*.json"))
                try { list.Add(parser.DeserializeResource(File.ReadAllText(f))); } catch (Exception) { /* not R4-parsable: not a case */ }
            break;
        }
        return list.Select(r => new object[] { r.TypeName + "/" + r.Id, r });
    }

    [Theory]
    [MemberData(nameof(Resources))]
    public void Compiled_expressions_select_what_FhirPath_selects(string name, Resource resource)
    {
        var root = new PocoNode(resource, null, null, null);
        foreach (var p in Registry.For(resource.TypeName))
        {
            List<Base> expected;
            try { expected = resource.Select(p.Expression, Context).OfType<Base>().ToList(); }
            catch (Exception) { continue; } // the SDK cannot evaluate it either: nothing to compare
            var actual = p.Compiled.Invoke([root], Context).Select(n => n.Poco).ToList();
            Assert.True(expected.Count == actual.Count, $"{name} {p.Code}: expected {expected.Count} nodes, got {actual.Count} ({p.Expression})");
            for (var i = 0; i < expected.Count; i++)
                Assert.True(ReferenceEquals(expected[i], actual[i]) || expected[i].IsExactly(actual[i]), $"{name} {p.Code}: node {i} differs");
        }
    }

    [Theory]
    [InlineData("Observation", "AllergyIntolerance.patient | Observation.subject.where(resolve() is Patient) | Procedure.subject", "Observation.subject.where(resolve() is Patient)")]
    [InlineData("Patient", "Patient.name | Practitioner.name", "Patient.name")]
    [InlineData("Patient", "Patient.telecom.where(system='phone') | Person.telecom", "Patient.telecom.where(system='phone')")]
    [InlineData("Patient", "Observation.code", "Observation.code")] // nothing for this type: left whole
    public void Narrowing_keeps_only_the_branches_of_the_type(string type, string expression, string expected) =>
        Assert.Equal(expected, SearchExpressions.Narrow(type, expression));
}

using System.Text;
using Hl7.Fhir.Model;

namespace PhrFhir.Storage.Tests;

/// <summary>
/// R4 datatypes.html#string: no character below U+0020 but tab, CR and LF. The cheap byte scan must never
/// miss a body that holds one (a false alarm only costs a walk); the walk names the element.
/// </summary>
public sealed class ControlCharactersTests
{
    public static TheoryData<string, string, bool> Bodies => new()
    {
        // case, body, may hold one
        { "JSON \\u0000 escape", "{\"family\":\"a\\u0000b\"}", true },
        { "JSON ANSI escape \\u001b", "{\"family\":\"\\u001b[31mred\"}", true },
        { "JSON upper-case \\u001B", "{\"family\":\"\\u001B\"}", true },
        { "JSON \\b", "{\"family\":\"a\\bb\"}", true },
        { "JSON \\f", "{\"family\":\"a\\fb\"}", true },
        { "JSON escaped backslash then b is text", "{\"family\":\"C:\\\\bin\"}", false },
        { "JSON newline and tab are allowed", "{\"family\":\"a\\n\\t\\r b\"}", false },
        { "JSON \\u0020 and above are allowed", "{\"family\":\"\\u0020\\u00e9\\u5c71\"}", false },
        { "JSON quote escape", "{\"family\":\"\\\"quoted\\\"\"}", false },
        { "plain Japanese", "{\"family\":\"山田\"}", false },
        { "raw control byte", "<family value=\"a\u001bb\"/>", true },
        { "XML character reference", "<family value=\"a&#x1b;b\"/>", true },
        { "XML entity is not a character reference", "<family value=\"a&amp;b\"/>", false },
    };

    [Theory]
    [MemberData(nameof(Bodies))]
    public void The_byte_scan_flags_every_body_that_may_hold_a_control_character(string name, string body, bool expected)
    {
        Assert.True(expected == ControlCharacters.MayBeIn(Encoding.UTF8.GetBytes(body)), $"[{name}] expected {expected}");
    }

    [Fact]
    public void The_walk_names_the_element_by_its_FHIRPath()
    {
        var bundle = new Bundle
        {
            Type = Bundle.BundleType.Transaction,
            Entry =
            [
                new Bundle.EntryComponent { Resource = new Patient { Name = [new HumanName { Family = "ok" }] } },
                new Bundle.EntryComponent
                {
                    Resource = new Patient { Contained = [new Organization { Name = "a\u001b[31mb" }], Name = [new HumanName { Family = "ok" }] },
                },
            ],
        };
        var e = Assert.Throws<FhirError>(() => ControlCharacters.RefuseIn(bundle));
        Assert.Equal("Bundle.entry[1].resource.contained[0].name", e.Expression);
        Assert.Contains("U+001B", e.Message, StringComparison.Ordinal);

        var patient = new Patient { Name = [new HumanName { Family = "ok", Given = ["x", "a\0b"] }] };
        Assert.Equal("Patient.name[0].given[1]", Assert.Throws<FhirError>(() => ControlCharacters.RefuseIn(patient)).Expression);

        var extension = new Patient { Extension = [new Extension("http://example.org/x\u0007", new FhirString("ok"))] };
        Assert.Equal("Patient.extension[0].url", Assert.Throws<FhirError>(() => ControlCharacters.RefuseIn(extension)).Expression);

        ControlCharacters.RefuseIn(new Patient { Name = [new HumanName { Family = "山田\t太郎\r\n" }] }); // allowed
    }

    [Fact]
    public void Scrubbing_replaces_control_characters_and_keeps_the_rest()
    {
        var audit = new AuditEvent { OutcomeDesc = "a\0b\u001b[31m\tc", Source = new AuditEvent.SourceComponent { Site = "ok" } };
        ControlCharacters.Scrub(audit);
        Assert.Equal("a\uFFFDb\uFFFD[31m\tc", audit.OutcomeDesc);
        Assert.Equal("ok", audit.Source.Site);
    }
}

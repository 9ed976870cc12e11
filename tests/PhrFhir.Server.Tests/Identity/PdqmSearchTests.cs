using System.Net;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests.Identity;

/// <summary>
/// IHE PDQm ITI-78 Patient searches with Japanese names (docs/identity.md): a name in kanji and its kana
/// reading (JP Core's name representation extension) is found in kanji, hiragana, katakana and
/// half-width katakana, alone and with PDQm's other parameters.
/// </summary>
[Collection("server")]
public sealed class PdqmSearchTests(ServerFixture server)
{
    const string Representation = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation";

    public static TheoryData<string> Queries => new()
    {
        "family=山田", "family=やまだ", "family=ヤマダ", "family=ﾔﾏﾀﾞ", "given=ﾊﾅｺ", "given=はなこ", "name=ハナコ", "name=山田",
        "family=ﾔﾏﾀﾞ&given=はなこ&birthdate=1985-06-15&gender=female", "name=ｙａｍａｄａ", "address-postalcode=100-0001", "telecom=090-1234-5678",
        "active=true",
    };

    [Theory]
    [MemberData(nameof(Queries))]
    public async System.Threading.Tasks.Task A_japanese_name_is_found_in_kanji_and_every_kana(string query)
    {
        var system = "urn:test:pdqm:" + Fhir.Unique();
        var patient = await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(new Patient
        {
            Identifier = [new Identifier(system, "1")],
            Active = true,
            Gender = AdministrativeGender.Female,
            BirthDate = "1985-06-15",
            Name =
            [
                new HumanName { Use = HumanName.NameUse.Official, Family = "山田", Given = ["花子"], Extension = [new Extension(Representation, new Code("IDE"))] },
                new HumanName { Use = HumanName.NameUse.Official, Family = "ヤマダ", Given = ["ハナコ"], Extension = [new Extension(Representation, new Code("SYL"))] },
                new HumanName { Use = HumanName.NameUse.Usual, Text = "Yamada Hanako", Family = "Yamada", Given = ["Hanako"] },
            ],
            Telecom = [new ContactPoint(ContactPoint.ContactPointSystem.Phone, ContactPoint.ContactPointUse.Mobile, "090-1234-5678")],
            Address = [new Address { PostalCode = "100-0001", State = "東京都", City = "千代田区" }],
        })), HttpStatusCode.Created);

        var found = await Fhir.ExpectAsync<Bundle>(await server.Http.GetAsync($"Patient?identifier={Uri.EscapeDataString(system)}|1&{query}"), HttpStatusCode.OK);
        Assert.True(found.Entry.Count == 1 && found.Entry[0].Resource.Id == patient.Id, $"{query} did not find the Patient");
        var missed = await Fhir.ExpectAsync<Bundle>(await server.Http.GetAsync($"Patient?identifier={Uri.EscapeDataString(system)}|1&family=ﾀﾅｶ"), HttpStatusCode.OK);
        Assert.Empty(missed.Entry);
    }
}

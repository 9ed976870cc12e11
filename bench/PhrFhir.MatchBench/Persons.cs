using System.Globalization;
using System.Text.Json.Nodes;
using PhrFhir.Bench;

namespace PhrFhir.MatchBench;

/// <summary>
/// The seeded population: person <c>i</c> is the same on every run (its own Random(i)), so the bench knows
/// whom it asks for without reading anything back. 50 family names × 60 given names (kanji + katakana
/// reading, JP Core's IDE and SYL names), birth dates over 1940–2005, sex, a mobile phone, a postal code,
/// and the institution's patient id (kenshin-a's JP Core system, the client the bench runs as).
/// </summary>
public sealed record Person(int Index, string FamilyKanji, string FamilyKana, string GivenKanji, string GivenKana, string Gender,
    string BirthDate, string Phone, string PostalCode)
{
    public const string MrnSystem = "urn:oid:1.2.392.100495.20.3.51.11312345678";
    const string Representation = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation";

    static readonly (string Kanji, string Kana)[] Male =
    [
        ("太郎", "タロウ"), ("翔太", "ショウタ"), ("大輝", "ダイキ"), ("健一", "ケンイチ"), ("拓也", "タクヤ"), ("蓮", "レン"),
        ("悠真", "ユウマ"), ("誠", "マコト"), ("浩二", "コウジ"), ("大和", "ヤマト"), ("一郎", "イチロウ"), ("健太", "ケンタ"),
        ("直樹", "ナオキ"), ("和也", "カズヤ"), ("達也", "タツヤ"), ("剛", "ツヨシ"), ("隆", "タカシ"), ("博", "ヒロシ"),
        ("修", "オサム"), ("茂", "シゲル"), ("亮", "リョウ"), ("颯太", "ソウタ"), ("陽翔", "ハルト"), ("湊", "ミナト"),
        ("樹", "イツキ"), ("大翔", "ヒロト"), ("優斗", "ユウト"), ("陸", "リク"), ("海斗", "カイト"), ("俊介", "シュンスケ"),
    ];

    static readonly (string Kanji, string Kana)[] Female =
    [
        ("花子", "ハナコ"), ("陽菜", "ヒナ"), ("美咲", "ミサキ"), ("由美", "ユミ"), ("さくら", "サクラ"), ("結衣", "ユイ"),
        ("葵", "アオイ"), ("恵子", "ケイコ"), ("優子", "ユウコ"), ("凛", "リン"), ("幸子", "サチコ"), ("洋子", "ヨウコ"),
        ("裕子", "ユウコ"), ("直美", "ナオミ"), ("真由美", "マユミ"), ("明美", "アケミ"), ("久美子", "クミコ"), ("智子", "トモコ"),
        ("愛", "アイ"), ("舞", "マイ"), ("彩", "アヤ"), ("美穂", "ミホ"), ("麻衣", "マイ"), ("千尋", "チヒロ"),
        ("芽衣", "メイ"), ("結菜", "ユイナ"), ("杏", "アン"), ("紬", "ツムギ"), ("楓", "カエデ"), ("美月", "ミヅキ"),
    ];

    public string Mrn => "M" + Index.ToString("D7", CultureInfo.InvariantCulture);

    public static Person Of(int i)
    {
        var rnd = new Random(i);
        var (familyKanji, familyKana) = JapaneseData.Families[rnd.Next(JapaneseData.Families.Length)];
        var male = rnd.Next(2) == 0;
        var (givenKanji, givenKana) = male ? Male[rnd.Next(Male.Length)] : Female[rnd.Next(Female.Length)];
        var birth = new DateOnly(1940, 1, 1).AddDays(rnd.Next(66 * 365));
        // Unique per person (i in the last 8 digits), as a mobile number is.
        var phone = $"0{(rnd.Next(3) switch { 0 => "70", 1 => "80", _ => "90" })}-{i / 10000 % 10000:D4}-{i % 10000:D4}";
        var postal = $"{rnd.Next(100, 999)}-{rnd.Next(0, 9999):D4}";
        return new(i, familyKanji, familyKana, givenKanji, givenKana, male ? "male" : "female",
            birth.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture), phone, postal);
    }

    public JsonObject Patient() => new()
    {
        ["resourceType"] = "Patient",
        ["identifier"] = new JsonArray(new JsonObject { ["system"] = MrnSystem, ["value"] = Mrn }),
        ["name"] = new JsonArray(
            Name(FamilyKanji, GivenKanji, "IDE"),
            Name(FamilyKana, GivenKana, "SYL")),
        ["gender"] = Gender,
        ["birthDate"] = BirthDate,
        ["telecom"] = new JsonArray(new JsonObject { ["system"] = "phone", ["value"] = Phone, ["use"] = "mobile" }),
        ["address"] = new JsonArray(new JsonObject { ["postalCode"] = PostalCode, ["country"] = "JP" }),
    };

    static JsonObject Name(string family, string given, string representation) => new()
    {
        ["extension"] = new JsonArray(new JsonObject { ["url"] = Representation, ["valueCode"] = representation }),
        ["use"] = "official",
        ["family"] = family,
        ["given"] = new JsonArray(given),
    };

    /// <summary>Katakana → hiragana, the way a receptionist may type the reading.</summary>
    public static string Hiragana(string kana) => new([.. kana.Select(c => c is >= '\u30A1' and <= '\u30F6' ? (char)(c - 0x60) : c)]);

    /// <summary>A transaction Bundle registering persons [from, to) as POSTs.</summary>
    public static string Transaction(int from, int to) => new JsonObject
    {
        ["resourceType"] = "Bundle",
        ["type"] = "transaction",
        ["entry"] = new JsonArray([.. Enumerable.Range(from, to - from).Select(i => (JsonNode)new JsonObject
        {
            ["fullUrl"] = "urn:uuid:" + Guid.NewGuid(),
            ["resource"] = Of(i).Patient(),
            ["request"] = new JsonObject { ["method"] = "POST", ["url"] = "Patient" },
        })]),
    }.ToJsonString();
}

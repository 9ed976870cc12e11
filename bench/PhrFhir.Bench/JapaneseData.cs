using System.Globalization;
using System.Text;

namespace PhrFhir.Bench;

/// <summary>
/// Request bodies as plain JSON strings (no SDK: building 1,000 Bundles must not slow the seeding).
/// Patients carry a kanji name (IDE) and a katakana reading (SYL) as JP Core does, and a local MRN.
/// </summary>
public static class JapaneseData
{
    /// <summary>Common family names with their readings. None is a prefix of another, so a family
    /// search (a prefix match, R4 search.html#string) finds exactly one name.</summary>
    public static readonly (string Kanji, string Kana)[] Families =
    [
        ("佐藤", "サトウ"), ("鈴木", "スズキ"), ("高橋", "タカハシ"), ("田中", "タナカ"), ("伊藤", "イトウ"),
        ("渡辺", "ワタナベ"), ("山本", "ヤマモト"), ("中村", "ナカムラ"), ("小林", "コバヤシ"), ("加藤", "カトウ"),
        ("吉田", "ヨシダ"), ("山田", "ヤマダ"), ("佐々木", "ササキ"), ("山口", "ヤマグチ"), ("松本", "マツモト"),
        ("井上", "イノウエ"), ("木村", "キムラ"), ("林", "ハヤシ"), ("斎藤", "サイトウ"), ("清水", "シミズ"),
        ("山崎", "ヤマザキ"), ("森", "モリ"), ("池田", "イケダ"), ("橋本", "ハシモト"), ("阿部", "アベ"),
        ("石川", "イシカワ"), ("山下", "ヤマシタ"), ("中島", "ナカジマ"), ("石井", "イシイ"), ("小川", "オガワ"),
        ("前田", "マエダ"), ("岡田", "オカダ"), ("長谷川", "ハセガワ"), ("藤田", "フジタ"), ("後藤", "ゴトウ"),
        ("近藤", "コンドウ"), ("村上", "ムラカミ"), ("遠藤", "エンドウ"), ("青木", "アオキ"), ("坂本", "サカモト"),
        ("福田", "フクダ"), ("太田", "オオタ"), ("西村", "ニシムラ"), ("藤井", "フジイ"), ("金子", "カネコ"),
        ("岡本", "オカモト"), ("藤原", "フジワラ"), ("中野", "ナカノ"), ("三浦", "ミウラ"), ("原田", "ハラダ"),
    ];

    static readonly (string Kanji, string Kana, string Gender)[] Givens =
    [
        ("太郎", "タロウ", "male"), ("花子", "ハナコ", "female"), ("翔太", "ショウタ", "male"), ("陽菜", "ヒナ", "female"),
        ("大輝", "ダイキ", "male"), ("美咲", "ミサキ", "female"), ("健一", "ケンイチ", "male"), ("由美", "ユミ", "female"),
        ("拓也", "タクヤ", "male"), ("さくら", "サクラ", "female"), ("蓮", "レン", "male"), ("結衣", "ユイ", "female"),
        ("悠真", "ユウマ", "male"), ("葵", "アオイ", "female"), ("誠", "マコト", "male"), ("恵子", "ケイコ", "female"),
        ("浩二", "コウジ", "male"), ("優子", "ユウコ", "female"), ("大和", "ヤマト", "male"), ("凛", "リン", "female"),
    ];

    static readonly string[] Prefectures = ["東京都新宿区", "大阪府大阪市北区", "北海道札幌市中央区", "福岡県福岡市博多区", "愛知県名古屋市中区", "宮城県仙台市青葉区"];

    // JP Core Patient: the MRN system is 1.2.392.100495.20.3.51.1 + the 10-digit 保険医療機関コード, here that of
    // kenshin-a (1312345678), the client the load runs as: an institution assigns only in its own domain (docs/identity.md).
    public const string MrnSystem = "urn:oid:1.2.392.100495.20.3.51.11312345678";
    const string NameRepresentation = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation";

    /// <summary>(LOINC, display, 日本語, unit, low, high, decimals)</summary>
    static readonly (string Code, string Display, string Ja, string Unit, double Low, double High, int Decimals)[] Vitals =
    [
        ("29463-7", "Body weight", "体重", "kg", 40, 95, 1),
        ("8302-2", "Body height", "身長", "cm", 145, 190, 1),
        ("8867-4", "Heart rate", "心拍数", "/min", 50, 110, 0),
        ("2339-0", "Glucose [Mass/volume] in Blood", "血糖値", "mg/dL", 70, 160, 0),
    ];

    /// <summary>
    /// Families of the search row (issue #12: ~2,000 matches per family): rarer names than <see cref="Families"/>,
    /// none of them a prefix of another name here (kanji or katakana), so a family search finds exactly its own.
    /// </summary>
    public static readonly (string Kanji, string Kana)[] SearchFamilies =
    [
        ("五十嵐", "イガラシ"), ("東海林", "ショウジ"), ("勅使河原", "テシガワラ"), ("宇佐美", "ウサミ"), ("小鳥遊", "タカナシ"),
    ];

    public static string Patient(Random rnd, string mrn) => Patient(rnd, mrn, Families[rnd.Next(Families.Length)]);

    public static string Patient(Random rnd, string mrn, (string Kanji, string Kana) family)
    {
        var (fk, fkana) = family;
        var (gk, gkana, gender) = Givens[rnd.Next(Givens.Length)];
        var birth = new DateOnly(1940, 1, 1).AddDays(rnd.Next(0, 365 * 65));
        var phone = $"090-{rnd.Next(1000, 10000)}-{rnd.Next(1000, 10000)}";
        var addr = Prefectures[rnd.Next(Prefectures.Length)];
        return string.Create(CultureInfo.InvariantCulture,
            $$"""{"resourceType":"Patient","identifier":[{"system":"{{MrnSystem}}","value":"{{mrn}}"}],"active":true,"name":[{"extension":[{"url":"{{NameRepresentation}}","valueCode":"IDE"}],"use":"official","text":"{{fk}} {{gk}}","family":"{{fk}}","given":["{{gk}}"]},{"extension":[{"url":"{{NameRepresentation}}","valueCode":"SYL"}],"use":"official","text":"{{fkana}} {{gkana}}","family":"{{fkana}}","given":["{{gkana}}"]}],"telecom":[{"system":"phone","value":"{{phone}}","use":"mobile"}],"gender":"{{gender}}","birthDate":"{{birth:yyyy-MM-dd}}","address":[{"text":"{{addr}}1-2-3","country":"JP"}]}""");
    }

    public static string Observation(Random rnd, string subjectReference, int vital)
    {
        var v = Vitals[vital % Vitals.Length];
        var value = Math.Round(v.Low + rnd.NextDouble() * (v.High - v.Low), v.Decimals);
        var when = new DateTimeOffset(2024, 1, 1, 9, 0, 0, TimeSpan.FromHours(9)).AddMinutes(rnd.Next(0, 60 * 24 * 600));
        return string.Create(CultureInfo.InvariantCulture,
            $$$"""{"resourceType":"Observation","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"{{{v.Code}}}","display":"{{{v.Display}}}"}],"text":"{{{v.Ja}}}"},"subject":{"reference":"{{{subjectReference}}}"},"effectiveDateTime":"{{{when:yyyy-MM-ddTHH:mm:sszzz}}}","valueQuantity":{"value":{{{value}}},"unit":"{{{v.Unit}}}","system":"http://unitsofmeasure.org","code":"{{{v.Unit}}}"}}""");
    }

    /// <summary>
    /// A transaction of <paramref name="patients"/> Patients, each followed by <paramref name="observationsEach"/>
    /// Observations that reference it by its urn:uuid fullUrl.
    /// </summary>
    public static string PatientTransaction(Random rnd, int patients, int observationsEach, Func<string> nextMrn)
    {
        var sb = new StringBuilder(patients * (1 + observationsEach) * 900);
        sb.Append("""{"resourceType":"Bundle","type":"transaction","entry":[""");
        var first = true;
        void Entry(string? fullUrl, string resource, string type)
        {
            if (!first) sb.Append(',');
            first = false;
            sb.Append('{');
            if (fullUrl is not null) sb.Append("\"fullUrl\":\"").Append(fullUrl).Append("\",");
            sb.Append("\"resource\":").Append(resource)
              .Append(",\"request\":{\"method\":\"POST\",\"url\":\"").Append(type).Append("\"}}");
        }
        for (var p = 0; p < patients; p++)
        {
            var uuid = "urn:uuid:" + Guid.NewGuid();
            Entry(uuid, Patient(rnd, nextMrn()), "Patient");
            for (var o = 0; o < observationsEach; o++)
                Entry(null, Observation(rnd, uuid, o), "Observation");
        }
        return sb.Append("]}").ToString();
    }
}

using PhrFhir.Storage.Search;

namespace PhrFhir.Storage.Tests;

/// <summary>
/// The folding behind FHIR string search (R4 search.html#string: case- and accent-insensitive) as a
/// Japanese user expects it. Each row is one rule; a failing row names the rule it broke.
/// </summary>
public sealed class JapaneseTextTests
{
    public static TheoryData<string, string, string> Folds => new()
    {
        // rule, input, folded
        { "half-width katakana becomes hiragana", "ﾔﾏﾀﾞ", "やまだ" },
        { "half-width handakuten is kept", "ﾊﾟﾝ", "ぱん" },
        { "half-width small tsu", "ｶﾞｯｺｳ", "がっこう" },
        { "full-width katakana becomes hiragana", "ヤマダ", "やまだ" },
        { "katakana vu becomes hiragana vu", "ヴ", "ゔ" },
        { "small katakana become small hiragana", "ァィゥェォャュョ", "ぁぃぅぇぉゃゅょ" },
        { "the long vowel mark stays", "ラーメン", "らーめん" },
        { "hiragana stays", "やまだ", "やまだ" },
        { "kanji stay", "山田", "山田" },
        { "full-width Latin becomes ASCII", "ＡＢＣ１２３", "abc123" },
        { "full-width lower-case Latin becomes ASCII", "ｓｍｉｔｈ", "smith" },
        { "upper case becomes lower case", "MÜLLER", "muller" },
        { "acute accents go", "Élodie", "elodie" },
        { "diaeresis goes", "Zoë", "zoe" },
        { "cedilla goes", "François", "francois" },
        { "full-width space becomes a space", "山田　太郎", "山田 太郎" },
        { "runs of spaces become one", "a  \t b", "a b" },
        { "leading and trailing spaces go", "  山田 ", "山田" },
        { "empty stays empty", "", "" },
        { "only spaces become empty", "　 ", "" },
        { "mixed scripts fold together", "ﾔﾏﾀﾞ　Ｔａｒō", "やまだ taro" },
    };

    [Theory]
    [MemberData(nameof(Folds))]
    public void Fold_applies_the_rule(string rule, string input, string expected)
    {
        var actual = JapaneseText.Fold(input);
        Assert.True(expected == actual, $"{rule}: Fold(\"{input}\") = \"{actual}\", expected \"{expected}\"");
    }

    public static TheoryData<string, string> DistinctNames => new()
    {
        // dakuten and handakuten change the name: they must survive folding
        { "ダ", "タ" },
        { "ﾀﾞ", "ﾀ" },
        { "だ", "た" },
        { "パ", "ハ" },
        { "バ", "パ" },
        // so do the other distinctions a Japanese reader makes
        { "つ", "っ" },
        { "山田", "山由" },
    };

    [Theory]
    [MemberData(nameof(DistinctNames))]
    public void Fold_keeps_names_apart_that_differ(string a, string b)
    {
        Assert.True(JapaneseText.Fold(a) != JapaneseText.Fold(b), $"\"{a}\" and \"{b}\" both fold to \"{JapaneseText.Fold(a)}\"");
    }

    [Theory]
    [InlineData("ﾔﾏﾀﾞ", "ヤマダ", "やまだ")]
    [InlineData("ＳＭＩＴＨ", "Smith", "smith")]
    [InlineData("ﾀﾞ", "ダ", "ダ")] // decomposed: タ + U+3099
    public void Forms_a_user_considers_the_same_fold_to_one_value(string a, string b, string c)
    {
        var folded = new[] { a, b, c }.Select(JapaneseText.Fold).Distinct().ToList();
        Assert.True(folded.Count == 1, $"\"{a}\", \"{b}\", \"{c}\" fold to {string.Join(", ", folded.Select(f => $"\"{f}\""))}");
    }

    public static TheoryData<string, string> Likes => new()
    {
        { "50%", @"50\%" },
        { "a_b", @"a\_b" },
        { @"a\b", @"a\\b" },
        { @"\%_", @"\\\%\_" },
        { "やまだ", "やまだ" },
    };

    [Theory]
    [MemberData(nameof(Likes))]
    public void EscapeLike_makes_wildcards_literal(string input, string expected)
    {
        var actual = JapaneseText.EscapeLike(input);
        Assert.True(expected == actual, $"EscapeLike(\"{input}\") = \"{actual}\", expected \"{expected}\"");
    }
}

using System.Globalization;
using System.Text;

namespace PhrFhir.Storage.Search;

/// <summary>
/// Folds text for FHIR string search (case- and accent-insensitive, R4 search.html#string) the way a
/// Japanese user expects: ﾔﾏﾀﾞ, ヤマダ and やまだ are one name; ＡＢＣ is abc; full-width spaces are spaces.
/// Dakuten are kept (ダ ≠ タ): they change the name.
/// </summary>
public static class JapaneseText
{
    public static string Fold(string value)
    {
        // NFKC: half-width katakana → full-width (ﾀﾞ → ダ), full-width Latin/digits → ASCII, 　 → space.
        var s = value.Normalize(NormalizationForm.FormKC);
        // Accents on Latin letters only: decompose, drop U+0300–U+036F, recompose. Kana voicing marks
        // (U+3099/U+309A) are outside that range and survive.
        var decomposed = s.Normalize(NormalizationForm.FormD);
        var sb = new StringBuilder(decomposed.Length);
        var lastWasSpace = true;
        foreach (var c in decomposed)
        {
            if (c is >= '\u0300' and <= '\u036F') continue;
            if (char.IsWhiteSpace(c))
            {
                if (!lastWasSpace) sb.Append(' ');
                lastWasSpace = true;
                continue;
            }
            lastWasSpace = false;
            // Katakana ァ..ヶ → hiragana ぁ..ゖ (same order, offset 0x60).
            sb.Append(c is >= '\u30A1' and <= '\u30F6' ? (char)(c - 0x60) : char.ToLowerInvariant(c));
        }
        if (sb.Length > 0 && sb[^1] == ' ') sb.Length--;
        return sb.ToString().Normalize(NormalizationForm.FormC);
    }

    /// <summary>Escapes LIKE wildcards so user text matches literally.</summary>
    public static string EscapeLike(string value) =>
        value.Replace("\\", "\\\\").Replace("%", "\\%").Replace("_", "\\_");
}

using System.Buffers;
using System.Globalization;
using Hl7.Fhir.Model;

namespace PhrFhir.Storage;

/// <summary>
/// R4 datatypes.html#string: a FHIR string holds no character below U+0020 other than tab, CR and LF
/// (regex <c>[ \r\n\t\S]+</c>; every other primitive's pattern is stricter). PostgreSQL cannot keep
/// U+0000 in text at all (SQLSTATE 22021), and escape sequences (ESC [31m) in stored text reach the
/// terminals and logs of whoever reads it later. Bodies, search parameters, the URL and the headers the
/// server keeps are checked; a hit is a 400 naming where it was.
/// </summary>
public static class ControlCharacters
{
    static readonly SearchValues<char> Forbidden = SearchValues.Create(
        [.. Enumerable.Range(0, 0x20).Where(c => c is not ('\t' or '\n' or '\r')).Select(c => (char)c)]);

    // Bytes that start something which may decode to one: a raw control byte, a JSON escape (\u0000, \b,
    // \f), an XML character reference (&#27;).
    static readonly SearchValues<byte> Suspicious = SearchValues.Create(
        [.. Enumerable.Range(0, 0x20).Where(c => c is not ('\t' or '\n' or '\r')).Select(c => (byte)c), (byte)'\\', (byte)'&']);

    public static bool AnyIn(ReadOnlySpan<char> text) => text.IndexOfAny(Forbidden) >= 0;

    /// <summary>
    /// Whether a body may hold one: a cheap scan of the bytes (vectorised), so that only bodies with a
    /// control byte, a JSON escape of one or an XML character reference are walked element by element.
    /// </summary>
    public static bool MayBeIn(ReadOnlySpan<byte> body)
    {
        for (var i = body.IndexOfAny(Suspicious); i >= 0; i = NextAfter(body, i + 1))
        {
            var rest = body[i..];
            if (rest[0] == '\\')
            {
                if (rest.Length < 2) return false;
                // \b and \f are U+0008 and U+000C; \u00XX below U+0020 is \u000X or \u001X.
                if (rest[1] is (byte)'b' or (byte)'f') return true;
                if (rest[1] == 'u' && rest.Length >= 6 && rest[2] == '0' && rest[3] == '0' && rest[4] is (byte)'0' or (byte)'1') return true;
                i++; // an escaped character (\\, \", \n, ...) is consumed with its backslash
                continue;
            }
            if (rest[0] == '&')
            {
                if (rest.Length > 1 && rest[1] == '#') return true;
                continue;
            }
            return true; // a raw control byte
        }
        return false;

        static int NextAfter(ReadOnlySpan<byte> body, int from)
        {
            if (from >= body.Length) return -1;
            var j = body[from..].IndexOfAny(Suspicious);
            return j < 0 ? -1 : from + j;
        }
    }

    /// <summary>Refuses (400) a resource any of whose strings holds one, naming the element by its FHIRPath.</summary>
    public static void RefuseIn(Resource resource)
    {
        if (Find(resource, resource.TypeName) is { } hit)
            throw Refusal(hit.Path, hit.Char, $"{hit.Path} holds");
    }

    /// <summary>Refuses (400) a parameter (a search parameter, a query parameter: name or value) that holds one.</summary>
    public static void RefuseInParameter(string name, string value)
    {
        if (AnyIn(name) || AnyIn(value))
        {
            var shown = Replaced(name);
            throw Refusal(shown, First(AnyIn(name) ? name : value), $"The parameter '{shown}' holds");
        }
    }

    /// <summary>Refuses (400) other text the server keeps (a URL, a header), named by <paramref name="where"/>.</summary>
    public static void Refuse(string? text, string where)
    {
        if (text is not null && AnyIn(text)) throw Refusal(where, First(text), where + " holds");
    }

    /// <summary>
    /// Replaces every one in the resource's strings by U+FFFD: for records the server writes itself from
    /// what a client sent (an AuditEvent of a refused request keeps what was sent, as far as it can be stored).
    /// </summary>
    public static void Scrub(Base node)
    {
        // A primitive's own value is not among its elements (those are its id and extensions).
        if (node is PrimitiveType { JsonValue: string s } p && AnyIn(s)) p.JsonValue = Replaced(s);
        foreach (var (_, value) in node.EnumerateElements())
        {
            if (value is Base child) Scrub(child);
            else if (value is IEnumerable<Base> list)
                foreach (var item in list) Scrub(item);
        }
    }

    static (string Path, char Char)? Find(Base node, string path)
    {
        if (node is PrimitiveType { JsonValue: string s } && s.AsSpan().IndexOfAny(Forbidden) is var i and >= 0) return (path, s[i]);
        foreach (var (name, value) in node.EnumerateElements())
        {
            if (value is Base child && Find(child, path + "." + name) is { } hit) return hit;
            if (value is IEnumerable<Base> list)
            {
                var n = 0;
                foreach (var item in list)
                    if (Find(item, $"{path}.{name}[{n++}]") is { } inList) return inList;
            }
        }
        return null;
    }

    static char First(string text) => text[text.AsSpan().IndexOfAny(Forbidden)];

    /// <summary>The text with every one replaced by U+FFFD (a column the server fills from what a client sent).</summary>
    public static string Scrubbed(string text) => AnyIn(text) ? Replaced(text) : text;

    static string Replaced(string text) => string.Create(text.Length, text, (span, t) =>
    {
        t.AsSpan().CopyTo(span);
        for (var i = span.IndexOfAny(Forbidden); i >= 0; i = span.IndexOfAny(Forbidden)) span[i] = '\uFFFD';
    });

    static FhirError Refusal(string expression, char c, string subject) =>
        FhirError.BadRequest(
            $"{subject} the control character U+{((int)c).ToString("X4", CultureInfo.InvariantCulture)}: FHIR strings may not contain characters below U+0020 other than tab, CR and LF (R4 datatypes.html#string). (制御文字は使えません)",
            expression);
}

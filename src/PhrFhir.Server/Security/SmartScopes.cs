using System.Text.RegularExpressions;

namespace PhrFhir.Server.Security;

/// <summary>What a request does to a resource type, in SMART v2 terms (c r u d s).</summary>
public enum Interaction { Create = 'c', Read = 'r', Update = 'u', Delete = 'd', Search = 's' }

/// <summary>One granted scope: patient/user/system context, a resource type or *, and the permitted interactions.</summary>
public sealed record SmartScope(string Context, string ResourceType, string Permissions)
{
    public bool Allows(Interaction interaction, string type) =>
        (ResourceType == "*" || ResourceType == type) && Permissions.Contains((char)interaction);
}

/// <summary>
/// SMART App Launch v2 scopes (<c>patient/DocumentReference.rs</c>, <c>user/*.cruds</c>,
/// <c>system/Patient.c</c>) and v1 ones (<c>read</c>, <c>write</c>, <c>*</c>), parsed from the token's
/// space-separated scope claim. Granular scopes with a query (<c>?category=…</c>) are not supported
/// yet and grant nothing, so they can never grant more than they say.
/// </summary>
public static partial class SmartScopes
{
    [GeneratedRegex(@"^(?<ctx>patient|user|system)/(?<type>\*|[A-Z][A-Za-z]+)\.(?<perm>[cruds]+|read|write|\*)$")]
    private static partial Regex Pattern();

    public static List<SmartScope> Parse(string? scopes)
    {
        var list = new List<SmartScope>();
        foreach (var s in (scopes ?? "").Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            var m = Pattern().Match(s);
            if (!m.Success) continue; // openid, launch, fhirUser, granular scopes: no resource permission
            var perm = m.Groups["perm"].Value switch
            {
                "read" => "rs",
                "write" => "cud",
                "*" => "cruds",
                var v2 when IsOrdered(v2) => v2,
                _ => "",
            };
            if (perm.Length > 0) list.Add(new SmartScope(m.Groups["ctx"].Value, m.Groups["type"].Value, perm));
        }
        return list;
    }

    // SMART v2: permissions appear in the order c, r, u, d, s ("rs" is valid, "sr" is not).
    static bool IsOrdered(string perm)
    {
        var last = -1;
        foreach (var c in perm)
        {
            var i = "cruds".IndexOf(c);
            if (i <= last) return false;
            last = i;
        }
        return true;
    }

    /// <summary>True when every requested scope is within what the client was registered for.</summary>
    public static bool Within(string requested, string registered)
    {
        var granted = Parse(registered);
        foreach (var s in requested.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            var parsed = Parse(s);
            if (parsed.Count == 0)
            {
                if (!registered.Split(' ').Contains(s)) return false;
                continue;
            }
            var want = parsed[0];
            foreach (var p in want.Permissions)
                if (!granted.Any(g => g.Context == want.Context && (g.ResourceType == "*" || g.ResourceType == want.ResourceType) && g.Permissions.Contains(p)))
                    return false;
        }
        return true;
    }
}

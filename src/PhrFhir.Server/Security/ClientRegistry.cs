using System.Text.Json;
using System.Text.Json.Serialization;

namespace PhrFhir.Server.Security;

/// <summary>The roles of the seed's people (MISSION.md); what each may see is decided by role, scopes and consent.</summary>
public enum PhrRole { Person, Institution, Physician, OccupationalPhysician, Employer, Operator }

/// <summary>The identifier of the Patient, Organization or Practitioner a client acts for.</summary>
public sealed record ActorIdentifier(string System, string Value);

/// <summary>
/// One client of the file named by PHRFHIR_CLIENTS (README "Authorisation"):
/// <c>{"clients":[{"clientId":"kenshin-a","clientSecret":"…","role":"institution","actor":{"system":"…","value":"…"},"scopes":"system/DocumentReference.cruds …"}]}</c>.
/// A client with <c>jwks</c> (a JSON Web Key Set of its public keys) authenticates with private_key_jwt
/// (SMART Backend Services) instead of a secret.
/// </summary>
public sealed class ClientRegistration
{
    public required string ClientId { get; init; }
    public string? ClientSecret { get; init; }
    public JsonElement? Jwks { get; init; }
    public required string Role { get; init; }
    public ActorIdentifier? Actor { get; init; }
    public required string Scopes { get; init; }
    public string[] GrantTypes { get; init; } = ["client_credentials"];
    /// <summary>authorization_code clients (the person's app, portals): the exact URIs the code may be sent to.</summary>
    public string[] RedirectUris { get; init; } = [];
    /// <summary>SHA-256 thumbprints (hex) of the client certificates this client must present over TLS (CertificateBinding).</summary>
    public string[] CertificateThumbprints { get; init; } = [];

    /// <summary>A browser-based or native app signs in a person (authorization code + PKCE); without a secret it is a public client.</summary>
    [JsonIgnore]
    public bool SignsInPersons => GrantTypes.Contains("authorization_code");

    [JsonIgnore]
    public PhrRole ParsedRole => Role switch
    {
        "person" => PhrRole.Person,
        "institution" => PhrRole.Institution,
        "physician" => PhrRole.Physician,
        "occupational-physician" => PhrRole.OccupationalPhysician,
        "employer" => PhrRole.Employer,
        "operator" => PhrRole.Operator,
        _ => throw new InvalidOperationException($"Client '{ClientId}': unknown role '{Role}' (person, institution, physician, occupational-physician, employer, operator)."),
    };
}

/// <summary>
/// A person who signs in at the embedded authorisation server (authorization code flow), from the same
/// file's <c>persons</c> key. The password is kept only as an ASP.NET Core Identity PasswordHasher hash
/// (<c>dotnet run --project src/PhrFhir.Server -- hash-password</c>); the actor names their Patient.
/// </summary>
public sealed class PersonRegistration
{
    public required string Username { get; init; }
    public required string PasswordHash { get; init; }
    public required ActorIdentifier Actor { get; init; }
}

/// <summary>The registered clients and persons, read once at start from the JSON file PHRFHIR_CLIENTS (or Auth:ClientsFile) names.</summary>
public sealed class ClientRegistry
{
    sealed record FileShape(List<ClientRegistration> Clients, List<PersonRegistration>? Persons);

    static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web) { ReadCommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true };

    readonly Dictionary<string, ClientRegistration> _clients;
    readonly Dictionary<string, PersonRegistration> _persons;

    public ClientRegistry(IEnumerable<ClientRegistration> clients, IEnumerable<PersonRegistration>? persons = null)
    {
        _clients = new(StringComparer.Ordinal);
        foreach (var c in clients)
        {
            _ = c.ParsedRole; // fail at start, not at the first token request
            foreach (var grant in c.GrantTypes)
                if (grant is not ("client_credentials" or "authorization_code" or "refresh_token"))
                    throw new InvalidOperationException($"Client '{c.ClientId}': grant type '{grant}' is not offered (client_credentials, authorization_code, refresh_token).");
            if (c.SignsInPersons)
            {
                // The code flow signs in a person from the persons key: the token is theirs, so the client must be a person's app.
                if (c.ParsedRole != PhrRole.Person || c.GrantTypes.Contains("client_credentials"))
                    throw new InvalidOperationException($"Client '{c.ClientId}': authorization_code is for the person's apps and portals (role person, not with client_credentials).");
                if (c.RedirectUris.Length == 0 || c.RedirectUris.Any(u => !Uri.TryCreate(u, UriKind.Absolute, out var parsed) || parsed.Fragment.Length > 0))
                    throw new InvalidOperationException($"Client '{c.ClientId}' needs redirectUris: absolute URIs without a fragment (RFC 6749 3.1.2).");
                if (c.Jwks is not null)
                    throw new InvalidOperationException($"Client '{c.ClientId}': private_key_jwt is offered to backend services only; an app has a secret or none (public).");
            }
            else if (c.ClientSecret is null && c.Jwks is null)
                throw new InvalidOperationException($"Client '{c.ClientId}' has neither clientSecret nor jwks: it could never authenticate.");
            if (c.CertificateThumbprints.Any(t => t.Replace(":", "").Replace(" ", "") is var hex && (hex.Length != 64 || !hex.All(char.IsAsciiHexDigit))))
                throw new InvalidOperationException($"Client '{c.ClientId}': certificateThumbprints are SHA-256 thumbprints, 64 hex digits.");
            if (!_clients.TryAdd(c.ClientId, c)) throw new InvalidOperationException($"Client '{c.ClientId}' is registered twice.");
        }
        _persons = new(StringComparer.Ordinal);
        foreach (var p in persons ?? [])
        {
            if (string.IsNullOrWhiteSpace(p.Username) || string.IsNullOrWhiteSpace(p.PasswordHash) || p.Actor is null)
                throw new InvalidOperationException("Every person needs username, passwordHash and actor.");
            if (!_persons.TryAdd(p.Username, p)) throw new InvalidOperationException($"Person '{p.Username}' is registered twice.");
        }
    }

    public IReadOnlyCollection<ClientRegistration> All => _clients.Values;

    public ClientRegistration? Find(string clientId) => _clients.GetValueOrDefault(clientId);

    public PersonRegistration? FindPerson(string username) => _persons.GetValueOrDefault(username);

    public static ClientRegistry Load(string? path)
    {
        if (string.IsNullOrEmpty(path)) return new ClientRegistry([]);
        var full = Path.GetFullPath(path);
        if (!File.Exists(full)) throw new InvalidOperationException($"PHRFHIR_CLIENTS names {full}, which does not exist.");
        var shape = JsonSerializer.Deserialize<FileShape>(File.ReadAllText(full), Json)
            ?? throw new InvalidOperationException($"{full} is not a clients file ({{\"clients\":[…]}}).");
        return new ClientRegistry(shape.Clients ?? [], shape.Persons);
    }
}

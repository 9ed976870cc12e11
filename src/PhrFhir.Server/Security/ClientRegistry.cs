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

/// <summary>The registered clients, read once at start from the JSON file PHRFHIR_CLIENTS (or Auth:ClientsFile) names.</summary>
public sealed class ClientRegistry
{
    sealed record FileShape(List<ClientRegistration> Clients);

    static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web) { ReadCommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true };

    readonly Dictionary<string, ClientRegistration> _clients;

    public ClientRegistry(IEnumerable<ClientRegistration> clients)
    {
        _clients = new(StringComparer.Ordinal);
        foreach (var c in clients)
        {
            _ = c.ParsedRole; // fail at start, not at the first token request
            if (c.ClientSecret is null && c.Jwks is null)
                throw new InvalidOperationException($"Client '{c.ClientId}' has neither clientSecret nor jwks: it could never authenticate.");
            if (!_clients.TryAdd(c.ClientId, c)) throw new InvalidOperationException($"Client '{c.ClientId}' is registered twice.");
        }
    }

    public IReadOnlyCollection<ClientRegistration> All => _clients.Values;

    public ClientRegistration? Find(string clientId) => _clients.GetValueOrDefault(clientId);

    public static ClientRegistry Load(string? path)
    {
        if (string.IsNullOrEmpty(path)) return new ClientRegistry([]);
        var full = Path.GetFullPath(path);
        if (!File.Exists(full)) throw new InvalidOperationException($"PHRFHIR_CLIENTS names {full}, which does not exist.");
        var shape = JsonSerializer.Deserialize<FileShape>(File.ReadAllText(full), Json)
            ?? throw new InvalidOperationException($"{full} is not a clients file ({{\"clients\":[…]}}).");
        return new ClientRegistry(shape.Clients ?? []);
    }
}

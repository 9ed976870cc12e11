using System.Globalization;

namespace PhrFhir.Bench;

/// <summary>Command line of the bench; bench/run.sh passes its own arguments through.</summary>
public sealed record BenchOptions
{
    /// <summary>Our server's build, started by the bench; empty in peer mode.</summary>
    public required string ServerDll { get; init; }
    /// <summary>Storage:DataDirectory of the server: the embedded PostgreSQL cluster. Its parent holds the logs.</summary>
    public required string DataDirectory { get; init; }
    public int Seconds { get; init; } = 20;
    public int WarmupSeconds { get; init; } = 10;
    public int[] Clients { get; init; } = [1, 8];
    public bool Fresh { get; init; }
    /// <summary>0 = pick a free loopback port.</summary>
    public int Port { get; init; }
    public string[] Scenarios { get; init; } = LoadScenarios.FiveRows;

    /// <summary>Peer mode: the FHIR R4 base URL of a server already running (ours, HAPI, Medplum…); the bench starts nothing.</summary>
    public Uri? BaseUrl { get; init; }
    /// <summary>Peer mode: the bearer token, or a command whose standard output is one; neither = no Authorization header (HAPI's default).</summary>
    public string? Token { get; init; }
    public string? TokenCommand { get; init; }
    /// <summary>Whether ITI-65 Bundles declare the MHD Minimal profiles: yes against ours, no by default against a peer (it has no MHD).</summary>
    public bool? MhdProfiles { get; init; }
    /// <summary>Also write the table as tab-separated values here (bench/compare.sh joins two of them).</summary>
    public string? Tsv { get; init; }
    /// <summary>Peer mode: a local process whose CPU to report as the server's (e.g. HAPI's java, Medplum's node).</summary>
    public int? ServerPid { get; init; }
    /// <summary>Peer mode: the data directory of a local PostgreSQL cluster whose CPU to show (e.g. ours started by scripts/serve.sh).</summary>
    public string? PostgresData { get; init; }

    public bool Peer => BaseUrl is not null;

    public const string Usage = """
        usage: bash bench/run.sh [--seconds N] [--warmup N] [--clients 1,8] [--scenarios read,create,...]
                                 [--fresh] [--port P] [--no-build] [--tsv FILE]
               bash bench/run.sh --base-url URL [--token T | --token-command CMD] [--mhd-iti65] [...]
          --seconds N    measured duration of each scenario × client count (default 20)
          --warmup N     unmeasured warm-up before each measurement (default 10)
          --clients L    comma-separated concurrent client counts (default 1,8)
          --scenarios L  subset of: read, create, search, iti65, iti67 (the default: issue #12's five rows),
                         transaction, search-observation (these two seed the 100k Patients + Observations)
          --fresh        wipe bench/data first (new cluster, start-up then includes initdb, reseed)
          --port P       server port on 127.0.0.1 (default: a free one)
          --no-build     (run.sh only) skip the Release builds
          --tsv FILE     also write the table as tab-separated values (bench/compare.sh reads it)
        peer mode (any FHIR R4 server already running; nothing is started, no server CPU figures):
          --base-url URL     its base, e.g. http://localhost:8080/fhir (HAPI) or http://localhost:8103/fhir/R4 (Medplum)
          --token T          bearer token to send (none: no Authorization header)
          --token-command C  shell command printing the token (run once, before seeding)
          --mhd-iti65        declare the MHD profiles in ITI-65 Bundles (default: only against our own server)
          --plain-iti65      do not declare them (default in peer mode)
          --server-pid PID   a local process whose CPU to show as the server's (e.g. the peer's java or node)
          --postgres-data D  the data directory of a local PostgreSQL cluster whose CPU to show
        """;

    public static BenchOptions Parse(string[] args)
    {
        string? dll = null, dataDir = null;
        var o = new BenchOptions { ServerDll = "", DataDirectory = "" };
        for (var i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            int NextInt(int min) => int.TryParse(Next(), NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n >= min
                ? n : throw new ArgumentException($"{args[i - 1]} needs an integer ≥ {min}, got '{args[i]}'");
            switch (args[i])
            {
                case "--server-dll": dll = Next(); break;
                case "--data-dir": dataDir = Next(); break;
                case "--seconds": o = o with { Seconds = NextInt(1) }; break;
                case "--warmup": o = o with { WarmupSeconds = NextInt(0) }; break;
                case "--port": o = o with { Port = NextInt(1) }; break;
                case "--fresh": o = o with { Fresh = true }; break;
                case "--base-url":
                    var url = Next();
                    o = o with
                    {
                        BaseUrl = Uri.TryCreate(url.EndsWith('/') ? url : url + "/", UriKind.Absolute, out var u) && u.Scheme is "http" or "https"
                            ? u : throw new ArgumentException($"--base-url: '{url}' is not an http(s) URL"),
                    };
                    break;
                case "--token": o = o with { Token = Next() }; break;
                case "--token-command": o = o with { TokenCommand = Next() }; break;
                case "--mhd-iti65": o = o with { MhdProfiles = true }; break;
                case "--plain-iti65": o = o with { MhdProfiles = false }; break;
                case "--tsv": o = o with { Tsv = Path.GetFullPath(Next()) }; break;
                case "--server-pid": o = o with { ServerPid = NextInt(1) }; break;
                case "--postgres-data": o = o with { PostgresData = Path.GetFullPath(Next()) }; break;
                case "--clients":
                    o = o with
                    {
                        Clients = [.. Next().Split(',', StringSplitOptions.RemoveEmptyEntries).Select(c =>
                            int.TryParse(c, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n is >= 1 and <= 1024
                                ? n : throw new ArgumentException($"--clients: '{c}' is not a count between 1 and 1024"))],
                    };
                    break;
                case "--scenarios":
                    var names = Next().Split(',', StringSplitOptions.RemoveEmptyEntries);
                    foreach (var n in names)
                        if (!LoadScenarios.Names.Contains(n)) throw new ArgumentException($"--scenarios: unknown scenario '{n}'");
                    o = o with { Scenarios = names };
                    break;
                case "-h" or "--help": throw new ArgumentException("");
                default: throw new ArgumentException($"unknown argument '{args[i]}'");
            }
        }
        if (o.Clients.Length == 0) throw new ArgumentException("--clients: give at least one count");
        if (o.Token is not null && o.TokenCommand is not null) throw new ArgumentException("--token and --token-command: give one");
        if (o.Peer) return o with { MhdProfiles = o.MhdProfiles ?? false };
        if (o.Token is not null || o.TokenCommand is not null) throw new ArgumentException("--token/--token-command go with --base-url");
        if (dll is null || dataDir is null) throw new ArgumentException("--server-dll and --data-dir are required (bench/run.sh passes them)");
        return o with { ServerDll = Path.GetFullPath(dll), DataDirectory = Path.GetFullPath(dataDir), MhdProfiles = o.MhdProfiles ?? true };
    }
}

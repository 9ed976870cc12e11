using System.Globalization;

namespace PhrFhir.Bench;

/// <summary>Command line of the bench; bench/run.sh passes its own arguments through.</summary>
public sealed record BenchOptions
{
    public required string ServerDll { get; init; }
    /// <summary>Storage:DataDirectory of the server: the embedded PostgreSQL cluster. Its parent holds the logs.</summary>
    public required string DataDirectory { get; init; }
    public int Seconds { get; init; } = 20;
    public int WarmupSeconds { get; init; } = 3;
    public int[] Clients { get; init; } = [1, 16];
    public bool Fresh { get; init; }
    /// <summary>0 = pick a free loopback port.</summary>
    public int Port { get; init; }
    public string[] Scenarios { get; init; } = LoadScenarios.Names;

    public const string Usage = """
        usage: bash bench/run.sh [--seconds N] [--warmup N] [--clients 1,16] [--scenarios read,create,...]
                                 [--fresh] [--port P] [--no-build]
          --seconds N    measured duration of each scenario × client count (default 20)
          --warmup N     unmeasured warm-up before each measurement (default 3)
          --clients L    comma-separated concurrent client counts (default 1,16)
          --scenarios L  subset of: read, create, search, transaction, search-observation
          --fresh        wipe bench/data first (new cluster, start-up then includes initdb, reseed)
          --port P       server port on 127.0.0.1 (default: a free one)
          --no-build     (run.sh only) skip the Release builds
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
        if (dll is null || dataDir is null) throw new ArgumentException("--server-dll and --data-dir are required (bench/run.sh passes them)");
        if (o.Clients.Length == 0) throw new ArgumentException("--clients: give at least one count");
        return o with { ServerDll = Path.GetFullPath(dll), DataDirectory = Path.GetFullPath(dataDir) };
    }
}

using System.Diagnostics;

static partial class Token
{
    /// <summary>
    /// Peer mode: <c>--token</c> as given, or the trimmed standard output of <c>--token-command</c> (run by
    /// /bin/sh once), or null for a server without authorisation (HAPI's default image).
    /// </summary>
    public static async Task<string?> FromOptionsAsync(PhrFhir.Bench.BenchOptions o, CancellationToken ct)
    {
        if (o.TokenCommand is null) return o.Token;
        var psi = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, UseShellExecute = false };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(o.TokenCommand);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("--token-command: could not start /bin/sh");
        var output = (await p.StandardOutput.ReadToEndAsync(ct)).Trim();
        await p.WaitForExitAsync(ct);
        if (p.ExitCode != 0 || output.Length == 0 || output.Any(char.IsWhiteSpace))
            throw new InvalidOperationException($"--token-command exited {p.ExitCode} and printed {(output.Length == 0 ? "nothing" : "more than one token")}");
        return output;
    }
}

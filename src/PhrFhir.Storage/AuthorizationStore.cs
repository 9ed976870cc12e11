using System.Text;
using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace PhrFhir.Storage;

/// <summary>
/// OpenIddict's stores (registered clients, authorizations, authorization codes and refresh tokens) in
/// the same PostgreSQL as the resources, so that a code is redeemed once and a refresh token is revoked
/// for every server process, and both survive a restart. The tables are created by the numbered script
/// Schema/008_authorization_store.sql like every other table (never by EF migrations); this model names
/// them in snake_case in the <c>auth</c> schema, and a test checks that model and script agree.
/// </summary>
public sealed class AuthorizationStore(DbContextOptions<AuthorizationStore> options) : DbContext(options)
{
    public const string Schema = "auth";

    /// <summary>EF Core on the store's own connection pool (one pool per process, shared with Marten).</summary>
    public static void Configure(DbContextOptionsBuilder options, NpgsqlDataSource dataSource) =>
        options.UseNpgsql(dataSource).UseOpenIddict();

    protected override void OnModelCreating(ModelBuilder builder)
    {
        base.OnModelCreating(builder);
        builder.UseOpenIddict(); // the four entities of OpenIddict.EntityFrameworkCore.Models
        builder.HasDefaultSchema(Schema);
        // "OpenIddictTokens"."AuthorizationId" → auth.tokens.authorization_id: names a DBA can read in 008.
        foreach (var entity in builder.Model.GetEntityTypes())
        {
            entity.SetTableName(SnakeCase(entity.GetTableName()!.Replace("OpenIddict", "", StringComparison.Ordinal)));
            foreach (var property in entity.GetProperties()) property.SetColumnName(SnakeCase(property.Name));
            foreach (var key in entity.GetKeys()) key.SetName(SnakeCase(key.GetName()!.Replace("OpenIddict", "", StringComparison.Ordinal)));
            foreach (var fk in entity.GetForeignKeys()) fk.SetConstraintName(SnakeCase(fk.GetConstraintName()!.Replace("OpenIddict", "", StringComparison.Ordinal)));
            foreach (var index in entity.GetIndexes()) index.SetDatabaseName(SnakeCase(index.GetDatabaseName()!.Replace("OpenIddict", "", StringComparison.Ordinal)));
        }
    }

    /// <summary>
    /// Holds a PostgreSQL advisory lock until disposed, so that of several server processes starting together
    /// one at a time registers the clients (the others then update what it created instead of colliding). Its number
    /// differs from every other advisory lock of ours (the audit sealer's is 7262020).
    /// </summary>
    public static async Task<IAsyncDisposable> LockClientRegistrationAsync(NpgsqlDataSource dataSource, CancellationToken ct)
    {
        var conn = await dataSource.OpenConnectionAsync(ct);
        await using var cmd = new NpgsqlCommand("select pg_advisory_lock(7262021)", conn);
        await cmd.ExecuteNonQueryAsync(ct);
        return new AdvisoryLock(conn);
    }

    sealed class AdvisoryLock(NpgsqlConnection conn) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await using (var cmd = new NpgsqlCommand("select pg_advisory_unlock(7262021)", conn)) await cmd.ExecuteNonQueryAsync();
            await conn.DisposeAsync();
        }
    }

    static string SnakeCase(string name)
    {
        var s = new StringBuilder(name.Length + 8);
        for (var i = 0; i < name.Length; i++)
        {
            var c = name[i];
            if (char.IsUpper(c) && i > 0 && name[i - 1] != '_' && (char.IsLower(name[i - 1]) || (i + 1 < name.Length && char.IsLower(name[i + 1]))))
                s.Append('_');
            s.Append(char.ToLowerInvariant(c));
        }
        return s.ToString();
    }
}

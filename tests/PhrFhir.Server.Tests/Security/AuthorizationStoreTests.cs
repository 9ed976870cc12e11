using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Metadata;
using Microsoft.Extensions.DependencyInjection;
using OpenIddict.EntityFrameworkCore.Models;
using PhrFhir.Storage;

namespace PhrFhir.Server.Tests.Security;

/// <summary>
/// OpenIddict's EF Core model (AuthorizationStore) against the tables Schema/008_authorization_store.sql
/// created in the real database: the script is written by hand, so these say when it and the model (a new
/// OpenIddict version, a renamed column) no longer agree.
/// </summary>
[Collection("server")]
public sealed class AuthorizationStoreTests(ServerFixture server)
{
    AuthorizationStore Context()
    {
        var options = new DbContextOptionsBuilder<AuthorizationStore>();
        AuthorizationStore.Configure(options, server.Services.GetRequiredService<FhirStore>().DataSource);
        return new AuthorizationStore(options.Options);
    }

    async Task<SortedSet<string>> RowsAsync(string sql)
    {
        await using var cmd = server.Services.GetRequiredService<FhirStore>().DataSource.CreateCommand(sql);
        await using var reader = await cmd.ExecuteReaderAsync();
        var rows = new SortedSet<string>(StringComparer.Ordinal);
        while (await reader.ReadAsync()) rows.Add(reader.GetString(0));
        return rows;
    }

    [Fact]
    public async System.Threading.Tasks.Task The_schema_script_creates_exactly_the_columns_keys_and_indexes_the_EF_model_expects()
    {
        await using var db = Context();
        var columns = new SortedSet<string>(StringComparer.Ordinal);
        var indexes = new SortedSet<string>(StringComparer.Ordinal);
        var foreignKeys = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var entity in db.Model.GetEntityTypes())
        {
            var table = StoreObjectIdentifier.Table(entity.GetTableName()!, entity.GetSchema());
            foreach (var p in entity.GetProperties())
                columns.Add($"{entity.GetSchema()}.{entity.GetTableName()}.{p.GetColumnName(table)} {p.GetColumnType()} {(p.IsColumnNullable(table) ? "null" : "not null")}");
            foreach (var key in entity.GetKeys()) indexes.Add($"{key.GetName()} unique");
            foreach (var index in entity.GetIndexes()) indexes.Add($"{index.GetDatabaseName()}{(index.IsUnique ? " unique" : "")}");
            foreach (var fk in entity.GetForeignKeys()) foreignKeys.Add(fk.GetConstraintName()!);
        }

        Assert.Equal(columns, await RowsAsync(
            "select n.nspname || '.' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || case when a.attnotnull then 'not null' else 'null' end " +
            "from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace " +
            $"where n.nspname = '{AuthorizationStore.Schema}' and c.relkind = 'r' and a.attnum > 0 and not a.attisdropped"));
        Assert.Equal(indexes, await RowsAsync(
            "select i.relname || case when x.indisunique then ' unique' else '' end from pg_index x " +
            $"join pg_class i on i.oid = x.indexrelid join pg_namespace n on n.oid = i.relnamespace where n.nspname = '{AuthorizationStore.Schema}'"));
        Assert.Equal(foreignKeys, await RowsAsync(
            $"select conname from pg_constraint k join pg_namespace n on n.oid = k.connamespace where n.nspname = '{AuthorizationStore.Schema}' and contype = 'f'"));
    }

    [Fact]
    public async System.Threading.Tasks.Task Every_entity_round_trips_through_PostgreSQL_with_every_column_filled()
    {
        var id = Fhir.Unique("rt");
        var application = Filled<OpenIddictEntityFrameworkCoreApplication>(id + "-app");
        var authorization = Filled<OpenIddictEntityFrameworkCoreAuthorization>(id + "-authz");
        var token = Filled<OpenIddictEntityFrameworkCoreToken>(id + "-token");
        var scope = Filled<OpenIddictEntityFrameworkCoreScope>(id + "-scope");
        authorization.Application = application;
        token.Application = application;
        token.Authorization = authorization;
        await using (var db = Context())
        {
            db.AddRange(application, authorization, token, scope);
            await db.SaveChangesAsync();
        }

        await using (var db = Context())
        {
            foreach (var (written, type) in new object[] { application, authorization, token, scope }.Select(e => (e, e.GetType())))
            {
                var entity = db.Model.FindEntityType(type)!;
                var key = (string)type.GetProperty("Id")!.GetValue(written)!;
                var read = await db.FindAsync(type, key);
                Assert.True(read is not null, $"{type.Name} {key} not read back");
                foreach (var p in entity.GetProperties().Where(p => p.PropertyInfo is not null))
                    Assert.True(Equals(p.PropertyInfo!.GetValue(written), p.PropertyInfo.GetValue(read)), $"{type.Name}.{p.Name} changed on its way through PostgreSQL");
                foreach (var fk in entity.GetForeignKeys().SelectMany(f => f.Properties))
                    Assert.NotNull(db.Entry(read!).Property(fk.Name).CurrentValue);
            }
            db.RemoveRange(await db.Set<OpenIddictEntityFrameworkCoreToken>().Where(t => t.Id == token.Id).ToListAsync());
            await db.SaveChangesAsync();
            db.RemoveRange(await db.Set<OpenIddictEntityFrameworkCoreAuthorization>().Where(a => a.Id == authorization.Id).ToListAsync());
            db.RemoveRange(await db.Set<OpenIddictEntityFrameworkCoreScope>().Where(s => s.Id == scope.Id).ToListAsync());
            await db.SaveChangesAsync();
            db.RemoveRange(await db.Set<OpenIddictEntityFrameworkCoreApplication>().Where(a => a.Id == application.Id).ToListAsync());
            await db.SaveChangesAsync();
        }
    }

    /// <summary>An entity with every string at its column's full length (Japanese text included) and every date set.</summary>
    T Filled<T>(string id) where T : new()
    {
        using var db = Context();
        var entity = db.Model.FindEntityType(typeof(T))!;
        var value = new T();
        foreach (var p in entity.GetProperties().Where(p => p.PropertyInfo is { CanWrite: true }))
        {
            if (p.ClrType == typeof(string))
            {
                var text = p.Name == "Id" ? id : (id + "-" + p.Name + "-健診結果").PadRight(p.GetMaxLength() ?? 300, 'あ');
                p.PropertyInfo!.SetValue(value, text[..Math.Min(text.Length, p.GetMaxLength() ?? text.Length)]);
            }
            else if (p.ClrType == typeof(DateTime?)) p.PropertyInfo!.SetValue(value, new DateTime(2026, 11, 1, 9, 30, 15, DateTimeKind.Utc));
        }
        return value;
    }
}

namespace PhrFhir.Storage.Search;

public readonly record struct StringRow(string Param, string Norm, string Exact);
public readonly record struct TokenRow(string Param, string? System, string? Code, string? Display, string? TypeSystem = null, string? TypeCode = null);
public readonly record struct ReferenceRow(string Param, string Target, string? TargetId);
public readonly record struct DateRow(string Param, DateTimeOffset Low, DateTimeOffset High);
public readonly record struct NumberRow(string Param, decimal Value, string? System, string? Code);
public readonly record struct UriRow(string Param, string Uri);

/// <summary>The index rows of one resource version, one list per index table.</summary>
public sealed class IndexRows
{
    public List<StringRow> Strings { get; } = [];
    public List<TokenRow> Tokens { get; } = [];
    public List<ReferenceRow> References { get; } = [];
    public List<DateRow> Dates { get; } = [];
    public List<NumberRow> Numbers { get; } = [];
    public List<UriRow> Uris { get; } = [];
}

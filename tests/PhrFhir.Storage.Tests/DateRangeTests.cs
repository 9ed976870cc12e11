using System.Globalization;
using PhrFhir.Storage.Search;

namespace PhrFhir.Storage.Tests;

/// <summary>
/// The instant range a FHIR date/dateTime/instant stands for (R4 search.html#date): its precision sets
/// the width; the upper end is inclusive, to the microsecond PostgreSQL keeps.
/// </summary>
public sealed class DateRangeTests
{
    public static TheoryData<string, string, string> Ranges => new()
    {
        // value, low (UTC), high (UTC, inclusive)
        { "2024", "2024-01-01T00:00:00.0000000Z", "2024-12-31T23:59:59.9999990Z" },
        { "2024-02", "2024-02-01T00:00:00.0000000Z", "2024-02-29T23:59:59.9999990Z" },
        { "2023-02", "2023-02-01T00:00:00.0000000Z", "2023-02-28T23:59:59.9999990Z" },
        { "2024-12", "2024-12-01T00:00:00.0000000Z", "2024-12-31T23:59:59.9999990Z" },
        { "2024-05-01", "2024-05-01T00:00:00.0000000Z", "2024-05-01T23:59:59.9999990Z" },
        { "2024-05-01T10:00Z", "2024-05-01T10:00:00.0000000Z", "2024-05-01T10:00:59.9999990Z" },
        { "2024-05-01T10:00", "2024-05-01T10:00:00.0000000Z", "2024-05-01T10:00:59.9999990Z" },
        { "2024-05-01T10:00:30Z", "2024-05-01T10:00:30.0000000Z", "2024-05-01T10:00:30.9999990Z" },
        { "2024-05-01T10:00:30+09:00", "2024-05-01T01:00:30.0000000Z", "2024-05-01T01:00:30.9999990Z" },
        { "2024-05-01T08:00:00+09:00", "2024-04-30T23:00:00.0000000Z", "2024-04-30T23:00:00.9999990Z" },
        { "2024-05-01T23:30:00-05:00", "2024-05-02T04:30:00.0000000Z", "2024-05-02T04:30:00.9999990Z" },
        { "2024-05-01T10:00:30.5Z", "2024-05-01T10:00:30.5000000Z", "2024-05-01T10:00:30.5999990Z" },
        { "2024-05-01T10:00:30.123Z", "2024-05-01T10:00:30.1230000Z", "2024-05-01T10:00:30.1239990Z" },
        { "2024-05-01T10:00:30.123456Z", "2024-05-01T10:00:30.1234560Z", "2024-05-01T10:00:30.1234560Z" },
        { "2024-12-31T23:59:59Z", "2024-12-31T23:59:59.0000000Z", "2024-12-31T23:59:59.9999990Z" },
        { "2024-02-29", "2024-02-29T00:00:00.0000000Z", "2024-02-29T23:59:59.9999990Z" },
    };

    [Theory]
    [MemberData(nameof(Ranges))]
    public void A_value_stands_for_the_range_of_its_precision(string value, string low, string high)
    {
        Assert.True(DateRange.TryParse(value, out var l, out var h), $"'{value}' should parse");
        var actual = (Format(l), Format(h));
        Assert.True((low, high) == actual, $"'{value}': expected [{low}, {high}] but got [{actual.Item1}, {actual.Item2}]");
    }

    static string Format(DateTimeOffset d) => d.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffffffZ", CultureInfo.InvariantCulture);

    public static TheoryData<string, string> Invalid => new()
    {
        // value, why it is not a FHIR date/dateTime/instant
        { "", "empty" },
        { "yesterday", "not a date" },
        { "24-01-01", "two-digit year" },
        { "2024-5-1", "one-digit month and day" },
        { "2024-13", "month 13" },
        { "2024-00", "month 0" },
        { "2023-02-29", "not a leap year" },
        { "2024-04-31", "April has 30 days" },
        { "2024-05-01T10", "hour without minutes" },
        { "2024-05-01T25:00Z", "hour 25" },
        { "2024-05-01T10:60Z", "minute 60" },
        { "2024-05-01T10:00:61Z", "second 61" },
        { "2024-05-01T10:00:99Z", "second 99" },
        { "2024-05-01 10:00", "space instead of T" },
        { "2024-05-01T10:00:00+9:00", "one-digit zone hour" },
        { "2024-05-01T10:00:00+15:00", "zone beyond ±14:00" },
        { "2024-05-01Z", "zone on a date" },
        { "2024-05-01T10:00:00.Z", "empty fraction" },
        { "0000", "year 0" },
    };

    [Theory]
    [MemberData(nameof(Invalid))]
    public void A_malformed_value_is_refused(string value, string why)
    {
        Assert.False(DateRange.TryParse(value, out _, out _), $"'{value}' ({why}) should not parse");
    }

    [Fact]
    public void Every_range_has_its_low_end_before_or_at_its_high_end()
    {
        foreach (var value in new[] { "2024", "2024-02", "2024-05-01", "2024-05-01T10:00Z", "2024-05-01T10:00:30Z", "2024-05-01T10:00:30.1234567Z", "2024-05-01T10:00:30.123456789Z" })
        {
            Assert.True(DateRange.TryParse(value, out var low, out var high), $"'{value}' should parse");
            Assert.True(low <= high, $"'{value}': low {low:o} is after high {high:o}");
        }
    }
}

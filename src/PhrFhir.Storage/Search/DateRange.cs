using System.Globalization;
using System.Text.RegularExpressions;

namespace PhrFhir.Storage.Search;

/// <summary>
/// The instant range a FHIR date/dateTime/instant stands for, from its precision (R4 search.html#date):
/// "2024" is the whole year, "2024-05-01T10:00" the whole minute. Values without a zone (dates) are read
/// as UTC, the server's one clock (the seed's CT profile).
/// </summary>
public static partial class DateRange
{
    [GeneratedRegex(@"^(?<y>\d{4})(-(?<m>\d{2})(-(?<d>\d{2})(T(?<h>\d{2}):(?<min>\d{2})(:(?<s>\d{2})(?<f>\.\d+)?)?(?<z>Z|[+-]\d{2}:\d{2})?)?)?)?$")]
    private static partial Regex Pattern();

    public static bool TryParse(string value, out DateTimeOffset low, out DateTimeOffset high)
    {
        low = high = default;
        var m = Pattern().Match(value);
        if (!m.Success) return false;
        try
        {
            var offset = TimeSpan.Zero;
            if (m.Groups["z"].Success && m.Groups["z"].Value != "Z")
                offset = TimeSpan.ParseExact(m.Groups["z"].Value[1..], @"hh\:mm", CultureInfo.InvariantCulture)
                         * (m.Groups["z"].Value[0] == '-' ? -1 : 1);
            int year = int.Parse(m.Groups["y"].Value);
            if (!m.Groups["m"].Success) { low = Utc(year, 1, 1, offset); high = low.AddYears(1); }
            else if (!m.Groups["d"].Success) { low = Utc(year, int.Parse(m.Groups["m"].Value), 1, offset); high = low.AddMonths(1); }
            else if (!m.Groups["h"].Success) { low = Utc(year, int.Parse(m.Groups["m"].Value), int.Parse(m.Groups["d"].Value), offset); high = low.AddDays(1); }
            else
            {
                var start = new DateTimeOffset(year, int.Parse(m.Groups["m"].Value), int.Parse(m.Groups["d"].Value),
                    int.Parse(m.Groups["h"].Value), int.Parse(m.Groups["min"].Value), 0, offset);
                // Seconds are 00–59, or 60 for a leap second (the R4 dateTime/instant regex); AddSeconds would take any.
                if (m.Groups["s"].Success && int.Parse(m.Groups["s"].Value) > 60) return false;
                if (!m.Groups["s"].Success) { low = start; high = start.AddMinutes(1); }
                else if (!m.Groups["f"].Success) { low = start.AddSeconds(int.Parse(m.Groups["s"].Value)); high = low.AddSeconds(1); }
                else
                {
                    var fraction = decimal.Parse("0" + m.Groups["f"].Value, CultureInfo.InvariantCulture);
                    low = start.AddSeconds(int.Parse(m.Groups["s"].Value)).AddTicks((long)(fraction * TimeSpan.TicksPerSecond));
                    var digits = m.Groups["f"].Value.Length - 1;
                    high = low.AddTicks(Math.Max(10, (long)(TimeSpan.TicksPerSecond / Math.Pow(10, Math.Min(digits, 7)))));
                }
            }
            low = low.ToUniversalTime();
            // Inclusive upper end: the last microsecond (PostgreSQL's precision) of the range.
            high = high.ToUniversalTime().AddTicks(-10);
            return true;
        }
        catch (ArgumentOutOfRangeException) { return false; }
        catch (FormatException) { return false; }
    }

    static DateTimeOffset Utc(int y, int m, int d, TimeSpan offset) => new(y, m, d, 0, 0, 0, offset);
}

using System.Collections.Concurrent;
using PhrFhir.Storage;

namespace PhrFhir.Server.Security;

/// <summary>
/// The Patient ids a person's token covers (FhirStore.PersonPatientsAsync: their own Patient and every Patient linked
/// or merged into it), held in memory per person: every request of a person's app needs them for its access filter,
/// and they change only by Patient/$link, $unlink and $merge. Those announce it (FhirStore.PersonLinksChanged: at
/// commit in this process, by NOTIFY in every other, and again when the listener reconnects), and everything held is
/// dropped then — as ConsentRules drops the Consent coverage of links.
/// </summary>
public sealed class PersonPatients
{
    /// <summary>Persons held at most (a few ids each); past it, all are dropped and read again as they come.</summary>
    const int Capacity = 100_000;

    readonly FhirStore _store;
    readonly ConcurrentDictionary<string, string[]> _held = new(StringComparer.Ordinal);
    readonly Lock _gate = new();
    long _generation;

    public PersonPatients(FhirStore store)
    {
        _store = store;
        store.Watched.Add(FhirStore.PersonLinksChanged);
        store.Changed += type =>
        {
            if (type != FhirStore.PersonLinksChanged) return;
            lock (_gate)
            {
                _generation++;
                _held.Clear();
            }
        };
    }

    public async Task<string[]> OfAsync(string person, CancellationToken ct)
    {
        if (_held.TryGetValue(person, out var ids)) return ids;
        long generation;
        lock (_gate) generation = _generation;
        ids = await _store.PersonPatientsAsync(person, ct);
        lock (_gate)
        {
            // A link changed while this was read: what was read may be from before it; answer it, but do not keep it.
            if (generation == _generation)
            {
                if (_held.Count >= Capacity) _held.Clear();
                _held[person] = ids;
            }
        }
        return ids;
    }
}

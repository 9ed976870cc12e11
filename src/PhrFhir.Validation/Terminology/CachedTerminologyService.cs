using System.Collections.Concurrent;
using Hl7.Fhir.Model;
using Hl7.Fhir.Serialization;
using Hl7.Fhir.Specification.Terminology;

namespace PhrFhir.Validation.Terminology;

/// <summary>
/// Remembers the answer to each $validate-code question (value set, version, code, system,
/// display, …) for the life of the family. The family's conformance set never changes while it is
/// loaded, so the same question always gets the same answer.
/// </summary>
/// <remarks>
/// Why: <see cref="LocalTerminologyService"/> expands value sets behind one process-wide
/// semaphore, and when an expansion fails (a JP code system such as JLAC10 is not available
/// locally) it tries again on every code of every document. Measured on HS037 Sample-01 this was
/// most of the warm validation time, and it serialised the threads.
/// </remarks>
internal sealed class CachedTerminologyService(ICodeValidationTerminologyService inner, int capacity = 100_000) : ICodeValidationTerminologyService
{
    private static readonly FhirJsonSerializer KeyWriter = new();
    private readonly ConcurrentDictionary<string, Task<Parameters>> _answers = new(StringComparer.Ordinal);

    public int Count => _answers.Count;

    public Task<Parameters> ValueSetValidateCode(Parameters parameters, string? id = null, bool useGet = false)
    {
        var key = "vc|" + id + "|" + KeyWriter.SerializeToString(parameters);
        if (_answers.TryGetValue(key, out var known)) return known;
        var answer = inner.ValueSetValidateCode(parameters, id, useGet);
        // A full cache stops remembering rather than growing without bound.
        if (_answers.Count < capacity) _answers.TryAdd(key, answer);
        return answer;
    }

    public Task<Parameters> Subsumes(Parameters parameters, string? id = null, bool useGet = false) =>
        inner.Subsumes(parameters, id, useGet);
}

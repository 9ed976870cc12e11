[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("PhrFhir.Validation.Tests")]
[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("PhrFhir.ValidationBench")]

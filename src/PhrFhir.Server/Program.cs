using PhrFhir.Server;

// `dotnet run --project src/PhrFhir.Server -- hash-password`: a person's password hash for PHRFHIR_CLIENTS.
if (args is ["hash-password"]) return PhrFhir.Server.Security.PersonLogin.HashPasswordCommand();
// `dotnet run --project src/PhrFhir.Server -- packages restore`: fills the FHIR package cache (docs/validation.md).
if (args is ["packages", "restore", ..]) return await PhrFhir.Server.Validation.PackageSettings.RestoreCommandAsync(args[2..]);

var app = await PhrFhirApp.BuildAsync(args);
await app.RunAsync();
return 0;

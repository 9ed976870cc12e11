using PhrFhir.Server;

// `dotnet run --project src/PhrFhir.Server -- hash-password`: a person's password hash for PHRFHIR_CLIENTS.
if (args is ["hash-password"]) return PhrFhir.Server.Security.PersonLogin.HashPasswordCommand();

var app = await PhrFhirApp.BuildAsync(args);
await app.RunAsync();
return 0;

//! Creating users with a given authentication plugin, grants and TLS requirement.

use crate::util::sql_literal;
use crate::{KitError, Server};

/// How a user authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPlugin {
    /// `mysql_native_password` (SHA-1 based challenge).
    MysqlNativePassword,
    /// MariaDB's `ed25519`; the kit installs the `auth_ed25519` plugin when missing.
    Ed25519,
}

impl AuthPlugin {
    fn name(self) -> &'static str {
        match self {
            AuthPlugin::MysqlNativePassword => "mysql_native_password",
            AuthPlugin::Ed25519 => "ed25519",
        }
    }
}

/// A user to create with [`Server::create_user_spec`].
#[derive(Debug, Clone)]
pub struct UserSpec {
    /// User name.
    pub name: String,
    /// Host pattern (default `%`).
    pub host: String,
    /// Password; never included in error messages.
    pub password: String,
    /// Authentication plugin (default `mysql_native_password`).
    pub plugin: AuthPlugin,
    /// Privilege clauses, each granted as `GRANT <clause> TO user`, e.g.
    /// `"SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.*"`.
    pub grants: Vec<String>,
    /// Adds `REQUIRE SSL`: the user may only connect over TLS.
    pub require_ssl: bool,
}

impl UserSpec {
    /// A user `name@'%'` with `mysql_native_password`, no grants and no TLS requirement.
    pub fn new(name: impl Into<String>, password: impl Into<String>) -> Self {
        UserSpec {
            name: name.into(),
            host: "%".to_string(),
            password: password.into(),
            plugin: AuthPlugin::MysqlNativePassword,
            grants: Vec::new(),
            require_ssl: false,
        }
    }

    /// Sets the host pattern.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// Sets the authentication plugin.
    pub fn plugin(mut self, plugin: AuthPlugin) -> Self {
        self.plugin = plugin;
        self
    }

    /// Adds a privilege clause such as `"SELECT ON db.*"`.
    pub fn grant(mut self, clause: impl Into<String>) -> Self {
        self.grants.push(clause.into());
        self
    }

    /// Requires TLS for this user.
    pub fn require_ssl(mut self, on: bool) -> Self {
        self.require_ssl = on;
        self
    }

    fn account(&self) -> String {
        format!("{}@{}", sql_literal(&self.name), sql_literal(&self.host))
    }

    /// `(statement, statement with the password hidden)`.
    fn create_statement(&self) -> (String, String) {
        let mut tail = String::new();
        if self.require_ssl {
            tail.push_str(" REQUIRE SSL");
        }
        let head = format!(
            "CREATE USER {} IDENTIFIED VIA {} USING PASSWORD(",
            self.account(),
            self.plugin.name()
        );
        (
            format!("{head}{}){tail}", sql_literal(&self.password)),
            format!("{head}'***'){tail}"),
        )
    }
}

impl Server {
    /// Creates `name@'%'` with the given plugin and privilege clauses (see [`UserSpec::grants`]).
    pub async fn create_user(
        &self,
        name: &str,
        password: &str,
        plugin: AuthPlugin,
        grants: &[&str],
    ) -> Result<(), KitError> {
        let mut spec = UserSpec::new(name, password).plugin(plugin);
        spec.grants = grants.iter().map(|g| g.to_string()).collect();
        self.create_user_spec(&spec).await
    }

    /// Creates a user as described, installing the ed25519 plugin first if needed.
    pub async fn create_user_spec(&self, spec: &UserSpec) -> Result<(), KitError> {
        if spec.plugin == AuthPlugin::Ed25519 {
            self.ensure_ed25519().await?;
        }
        let mut conn = self.admin_conn().await?;
        let (sql, shown) = spec.create_statement();
        mysql_async::prelude::Queryable::query_drop(&mut conn, sql)
            .await
            .map_err(|e| self.sql_error(&shown, e))?;
        for clause in &spec.grants {
            let sql = format!("GRANT {clause} TO {}", spec.account());
            mysql_async::prelude::Queryable::query_drop(&mut conn, &sql)
                .await
                .map_err(|e| self.sql_error(&sql, e))?;
        }
        crate::server::close(conn).await;
        Ok(())
    }

    async fn ensure_ed25519(&self) -> Result<(), KitError> {
        let loaded: Option<String> = self
            .query_scalar(
                "SELECT MAX(PLUGIN_STATUS) FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'ed25519'",
            )
            .await?;
        if loaded.as_deref() == Some("ACTIVE") {
            return Ok(());
        }
        match self.exec("INSTALL SONAME 'auth_ed25519'").await {
            Ok(()) => Ok(()),
            // ER_PLUGIN_INSTALLED: a concurrent caller installed it first, which is fine.
            Err(KitError::Sql {
                source: mysql_async::Error::Server(ref e),
                ..
            }) if e.code == 1968 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_statement_hides_password_in_display_form() {
        let spec = UserSpec::new("app", "s3cr'et")
            .plugin(AuthPlugin::Ed25519)
            .require_ssl(true);
        let (sql, shown) = spec.create_statement();
        assert_eq!(
            sql,
            "CREATE USER 'app'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('s3cr\\'et') REQUIRE SSL"
        );
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(shown.ends_with("PASSWORD('***') REQUIRE SSL"), "{shown}");
    }
}

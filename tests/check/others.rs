//! `walhook check` where what walhook needs belongs to someone else: a slot of its name in
//! another database, a publication and tables owned by another role. Each blocks `walhook run`
//! (see `bad_input::run_failures`), with a fix that works when run as the fix says.

use walhook::database::prerequisites::Verdict;
use walhook::model::TableName;

use super::{findings, orders, problem, ready_db, run_fix};
use crate::support::{connect, TestDb};

#[tokio::test]
async fn a_slot_of_that_name_in_another_database() {
    // GIVEN this database ready but for its slot, and a slot of the configured name in another
    // database of the server
    let (db, client) = ready_db().await;
    let name = db.name();
    run_fix(
        &client,
        &format!("SELECT pg_drop_replication_slot('{name}');"),
    )
    .await;
    let other = TestDb::new().await;
    run_fix(
        &other.client().await,
        &format!("SELECT pg_create_logical_replication_slot('{name}', 'pgoutput');"),
    )
    .await;
    // WHEN checked
    let found = findings(&client, name, &[&orders()]).await;
    // THEN the slot blocks walhook, named with the database that owns it, and the fix says to
    // choose another slot or drop that one
    let p = problem(
        &found,
        &format!(
            "replication slot `{name}` belongs to database `{}`, not to `{name}`",
            other.name()
        ),
    );
    assert_eq!(p.verdict, Verdict::Blocks);
    let fix = p.fix.clone().unwrap();
    assert_eq!(
        fix,
        format!(
            "choose another source.slot (or point source.url at database `{}`)\n\
             or, if nothing uses the slot any more, drop it: SELECT pg_drop_replication_slot('{name}');",
            other.name()
        )
    );
    // WHEN the slot is dropped as the fix says, from this database
    run_fix(&client, fix.rsplit("drop it: ").next().unwrap()).await;
    // THEN what is left is the slot walhook creates itself
    let found = findings(&client, name, &[&orders()]).await;
    let p = problem(&found, &format!("replication slot `{name}` does not exist"));
    assert_eq!(p.verdict, Verdict::RunFixes);
    assert_eq!(found.iter().filter(|f| !f.is_ok()).count(), 1, "{found:#?}");
}

#[tokio::test]
async fn a_publication_walhook_may_not_complete_or_create() {
    // GIVEN a publication of `orders` owned by the admin, a `customers` table it lacks, and a
    // walhook role with REPLICATION that owns neither
    let (db, admin) = ready_db().await;
    let name = db.name();
    let role = format!("p_{name}");
    admin
        .batch_execute(&format!(
            "CREATE TABLE customers (id int PRIMARY KEY);
             CREATE ROLE {role} LOGIN REPLICATION PASSWORD 'pw';
             GRANT SELECT ON orders, customers TO {role};"
        ))
        .await
        .unwrap();
    let owner: String = admin
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    let server = crate::support::Server::get();
    let as_role = connect(&server.url_for(&role, "pw", name)).await;
    let customers = TableName {
        schema: "public".into(),
        name: "customers".into(),
    };
    let tables = [&orders(), &customers];
    // WHEN checked as that role
    let found = findings(&as_role, name, &tables).await;
    // THEN the missing table blocks walhook: who owns what, and the SQL for a role that may
    let p = problem(
        &found,
        &format!("publication `{name}` lacks 1 mapped table(s)"),
    );
    assert_eq!(p.verdict, Verdict::Blocks);
    assert_eq!(
        p.summary,
        format!(
            "publication `{name}` lacks 1 mapped table(s): \"public\".\"customers\", and walhook \
             may not add them: its owner is `{owner}`, not role `{role}`; role `{role}` does not \
             own public.customers (owned by `{owner}`), and only a table's owner may publish it"
        )
    );
    assert_eq!(
        p.fix.as_deref(),
        Some(
            format!(
            "ALTER PUBLICATION \"{name}\" ADD TABLE \"public\".\"customers\";  -- as a superuser, \
             or a role that owns the publication and these tables"
        )
            .as_str()
        )
    );
    // WHEN the admin runs the fix THEN nothing is left to do
    run_fix(&admin, p.fix.as_deref().unwrap()).await;
    let found = findings(&as_role, name, &tables).await;
    assert!(found.iter().all(|f| f.is_ok()), "{found:#?}");

    // GIVEN the publication publishes inserts only
    admin
        .batch_execute(&format!(
            "ALTER PUBLICATION {name} SET (publish = 'insert')"
        ))
        .await
        .unwrap();
    // THEN that blocks walhook too, which may not change it
    let found = findings(&as_role, name, &tables).await;
    let p = problem(&found, "does not publish every operation");
    assert_eq!(p.verdict, Verdict::Blocks);
    assert!(
        p.summary
            .ends_with(&format!("its owner is `{owner}`, not role `{role}`")),
        "{p:#?}"
    );
    run_fix(&admin, p.fix.as_deref().unwrap()).await;
    let found = findings(&as_role, name, &tables).await;
    assert!(found.iter().all(|f| f.is_ok()), "{found:#?}");

    // GIVEN no publication at all
    admin
        .batch_execute(&format!("DROP PUBLICATION {name}"))
        .await
        .unwrap();
    // THEN walhook may not create it: no CREATE on the database, and the tables are not its own
    let found = findings(&as_role, name, &tables).await;
    let p = problem(&found, &format!("publication `{name}` does not exist"));
    assert_eq!(p.verdict, Verdict::Blocks);
    assert_eq!(
        p.summary,
        format!(
            "publication `{name}` does not exist, and walhook may not create it: role `{role}` \
             lacks the CREATE privilege on database `{name}`; role `{role}` does not own \
             public.orders (owned by `{owner}`), public.customers (owned by `{owner}`), and only \
             a table's owner may publish it"
        )
    );
    assert_eq!(
        p.fix.as_deref(),
        Some(format!(
            "CREATE PUBLICATION \"{name}\" FOR TABLE \"public\".\"orders\", \"public\".\"customers\";  \
             -- as a superuser, or the tables' owner with CREATE on the database"
        ).as_str())
    );
    run_fix(&admin, p.fix.as_deref().unwrap()).await;
    let found = findings(&as_role, name, &tables).await;
    assert!(found.iter().all(|f| f.is_ok()), "{found:#?}");
}
